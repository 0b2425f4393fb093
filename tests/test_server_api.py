"""The HTTP API against the real ``pam serve`` process (embedded tiny model, loopback): every
endpoint, server-sent events, the OpenAI-compatible endpoint through the unchanged ``openai``
client, the bounded queue and dropped work of clients that left."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("av")

from server_media import data_uri, iou, png_bytes, scene, write_mp4  # noqa: E402

from perceive_anything.results import rle_to_mask  # noqa: E402

TOKENS = 24  # short answers keep the suite fast; the tiny model's answers fit
CJK = re.compile(r"[\u4e00-\u9fff]")


def parse_sse(text: str) -> list[tuple[str, object]]:
    """(event, data) pairs of a text/event-stream body; bare ``data:`` lines get event 'message'."""
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        payload = "\n".join(data)
        events.append((event, payload if payload == "[DONE]" else json.loads(payload)))
    return events


@pytest.fixture(scope="module")
def client(pam_server):
    with httpx.Client(base_url=pam_server.url, timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def shapes():
    s = scene()
    data = png_bytes(s.image)
    return s, data, data_uri(data), [float(v) for v in s.objects[0].box]


@pytest.fixture(scope="module")
def image_id(client, shapes):
    r = client.post("/v1/images", json={"image": shapes[2]})
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


@pytest.fixture(scope="module")
def video(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    truth = write_mp4(path)
    r = client.post("/v1/videos", files={"file": ("shapes.mp4", path.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    return r.json(), truth, path


def test_health_and_models(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny-shapes"
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == h["model"] and card["embedded"] is True
    assert card["device"] == "cpu" and card["dtype"] == "float32"
    assert {"label", "definition", "brief_caption", "detailed_caption", "question"} <= set(card["tasks"])
    assert card["languages"] == ["en", "zh"]
    assert client.get("/docs").status_code == 200
    assert "/v1/perceive" in client.get("/openapi.json").json()["paths"]


def test_image_upload_json_and_multipart_share_one_encoding(client, shapes, image_id):
    s, data, uri, _ = shapes
    r = client.post("/v1/images", files={"file": ("scene.png", data, "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert body["image_id"] == image_id and (body["width"], body["height"]) == (128, 128)
    assert body["cached"] is True  # same bytes: the encoder did not run again
    before = client.get("/health").json()["cache"]
    # an inline image equal to an uploaded one is served from the cache too
    r = client.post("/v1/segment", json={"image": uri, "regions": [{"box": shapes[3]}]})
    assert r.status_code == 200
    after = client.get("/health").json()["cache"]
    assert after["items"] == before["items"] and after["hits"] > before["hits"]


def test_segment_gives_masks_without_text(client, shapes, image_id):
    s, _, _, box0 = shapes
    obj1 = s.objects[1]
    ys, xs = np.nonzero(obj1.mask)
    click = [float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]
    r = client.post("/v1/segment", json={"image_id": image_id, "regions": [{"box": box0}, {"points": [click], "labels": [1]}]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["image_size"] == {"width": 128, "height": 128} and len(res["regions"]) == 2
    assert all(reg["outputs"] == [] for reg in res["regions"])
    assert res["regions"][1]["prompt"] == {"kind": "points", "points": [click], "labels": [1]}
    assert iou(rle_to_mask(res["regions"][0]["mask_rle"]), s.objects[0].mask) > 0.5
    assert rle_to_mask(res["regions"][1]["mask_rle"])[int(click[1]), int(click[0])]


def test_perceive_json(client, shapes, image_id):
    s, _, _, box0 = shapes
    r = client.post("/v1/perceive", json={"image_id": image_id, "regions": [{"box": box0}],
                                          "tasks": ["label", "brief_caption"], "max_new_tokens": TOKENS})
    assert r.status_code == 200, r.text
    reg = r.json()["regions"][0]
    assert [o["task"] for o in reg["outputs"]] == ["label", "brief_caption"]
    assert reg["outputs"][0]["label"] and reg["outputs"][1]["caption"]
    seg = client.post("/v1/segment", json={"image_id": image_id, "regions": [{"box": box0}]}).json()
    assert seg["regions"][0]["mask_rle"] == reg["mask_rle"]  # the click's mask is the final mask
    zh = client.post("/v1/perceive", json={"image_id": image_id, "regions": [{"box": box0}], "tasks": ["label"],
                                           "lang": "zh", "max_new_tokens": TOKENS}).json()
    assert zh["regions"][0]["outputs"][0]["lang"] == "zh" and CJK.search(zh["regions"][0]["outputs"][0]["text"])
    rle_mask = {"mask": reg["mask_rle"]}
    png_mask = {"mask": data_uri(png_bytes(s.objects[0].mask.astype(np.uint8) * 255))}
    r = client.post("/v1/perceive", json={"image_id": image_id, "regions": [rle_mask, png_mask], "tasks": ["label"],
                                          "max_new_tokens": TOKENS, "question": None})
    assert r.status_code == 200, r.text
    prompts = [reg["prompt"] for reg in r.json()["regions"]]
    assert prompts == [{"kind": "mask", "mask_area": reg["area"]}, {"kind": "mask", "mask_area": int(s.objects[0].mask.sum())}]


def test_perceive_stream_events(client, shapes, image_id):
    _, _, _, box0 = shapes
    body = {"image_id": image_id, "regions": [{"box": box0}, {"box": [0, 0, 64, 64]}],
            "tasks": ["label", "brief_caption"], "max_new_tokens": TOKENS, "stream": True}
    with client.stream("POST", "/v1/perceive", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.read().decode())
    names = [e for e, _ in events]
    assert names[0] == "mask" and names[-2:] == ["result", "done"]
    assert set(names[1:-2]) == {"token"}
    mask, result = events[0][1], events[-2][1]
    assert [reg["mask_rle"] for reg in mask["regions"]] == [reg["mask_rle"] for reg in result["regions"]]
    assert all(reg["outputs"] == [] for reg in mask["regions"])
    streamed: dict[tuple[int, str], str] = {}
    for _, tok in events[1:-2]:
        streamed[(tok["region"], tok["task"])] = streamed.get((tok["region"], tok["task"]), "") + tok["text"]
    for reg in result["regions"]:
        for out in reg["outputs"]:
            assert streamed[(reg["index"], out["task"])].strip() == out["text"]


def test_openai_client(pam_server, client, shapes, image_id):
    openai = pytest.importorskip("openai")
    s, data, uri, box0 = shapes
    oa = openai.OpenAI(base_url=pam_server.url + "/v1", api_key="x", max_retries=0)
    model = oa.models.list().data[0].id
    ref = client.post("/v1/perceive", json={"image_id": image_id, "regions": [{"box": box0}], "tasks": ["label"],
                                            "max_new_tokens": TOKENS}).json()["regions"][0]["outputs"][0]["text"]
    content = [{"type": "image_url", "image_url": {"url": uri}},
               {"type": "text", "text": "Classify this subject and provide its label."}]
    res = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": content, "region": {"box": box0}}],
                                     max_tokens=TOKENS)
    assert res.object == "chat.completion" and res.model == model
    assert res.choices[0].message.role == "assistant" and res.choices[0].finish_reason == "stop"
    assert res.choices[0].message.content == ref  # the instruction selected the label task
    assert res.usage.completion_tokens > 0 and res.usage.prompt_tokens > 0
    stream = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": content, "region": {"box": box0}}],
                                        max_tokens=TOKENS, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == ref
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == res.usage.completion_tokens

    # Describe Anything's convention: the PNG's alpha channel is the region; other text is a question
    rgba = np.dstack([s.image, s.objects[0].mask.astype(np.uint8) * 255])
    alpha_uri = data_uri(png_bytes(rgba))
    res = oa.chat.completions.create(model=model, max_tokens=TOKENS, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": alpha_uri}}, {"type": "text", "text": "What colour is it?"}]}])
    pam = res.model_dump()["pam"]
    assert pam["regions"][0]["prompt"] == {"kind": "mask", "mask_area": int(s.objects[0].mask.sum())}
    assert pam["regions"][0]["outputs"][0]["task"] == "question"
    assert res.choices[0].message.content == pam["regions"][0]["outputs"][0]["text"]

    # a file URL under --allowed-root is read; outside it is refused before anything is read
    (pam_server.allowed_root / "scene.png").write_bytes(data)
    res = oa.chat.completions.create(model=model, max_tokens=TOKENS, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": (pam_server.allowed_root / "scene.png").as_uri()}},
        {"type": "text", "text": "Classify this subject and provide its label."}], "region": {"box": box0}}])
    assert res.choices[0].message.content == ref
    with pytest.raises(openai.PermissionDeniedError) as err:
        oa.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/no-such-dir/secret.png"}}], "region": {"box": box0}}])
    assert err.value.body["param"] == "messages[0].content[0].image_url"
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_video_upload_frames_and_tracking(client, video, tmp_path):
    info, truth, path = video
    assert info["num_frames"] == 12 and (info["width"], info["height"]) == (96, 96) and info["fps"] == 8
    frame = client.get(f"/v1/videos/{info['video_id']}/frames/3")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frame.content)).size == (96, 96)
    assert client.get(f"/v1/videos/{info['video_id']}/frames/12").status_code == 404

    b0 = [float(v) for v in truth.objects[0].boxes[0]]
    b1 = [float(v) for v in truth.objects[1].boxes[5]]
    r = client.post("/v1/perceive_video", json={"video_id": info["video_id"], "max_new_tokens": TOKENS,
                                                "objects": [{"frame": 0, "box": b0}, {"frame": 5, "box": b1}]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["num_frames"] == 12 and res["frame_indices"] == list(range(12))
    assert [(o["obj_id"], o["prompt_frame"]) for o in res["objects"]] == [(1, 0), (2, 5)]
    for o, obj_truth in zip(res["objects"], truth.objects):
        assert len(o["masks_rle"]) == 12 and o["outputs"][0]["task"] == "video_caption" and o["outputs"][0]["text"]
        assert iou(rle_to_mask(o["masks_rle"][8]), obj_truth.masks[8]) > 0.3

    # with sampling, a prompt drawn on a source frame goes to the nearest processed frame
    r = client.post("/v1/perceive_video", json={"video_id": info["video_id"], "max_new_tokens": TOKENS, "num_frames": 6,
                                                "objects": [{"frame": 7, "box": [float(v) for v in truth.objects[1].boxes[7]]}]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["frame_indices"] == [0, 2, 4, 6, 8, 11] and res["objects"][0]["prompt_frame"] == 3  # frame 6
    assert len(res["objects"][0]["masks_rle"]) == 6

    # a zip of frames is a video too
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for t in range(4):
            z.writestr(f"frames/{t:05d}.png", png_bytes(np.asarray(truth.frames[t])))
    r = client.post("/v1/videos", files={"file": ("frames.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 200, r.text
    assert r.json()["num_frames"] == 4 and r.json()["width"] == 96


def test_stream_sse_one_event_per_clip(client, video):
    info, truth, _ = video
    body = {"video_id": info["video_id"], "region": {"box": [float(v) for v in truth.objects[0].boxes[0]]},
            "clip": 6, "max_new_tokens": TOKENS}
    with client.stream("POST", "/v1/stream", json=body) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events] == ["caption", "caption", "done"]
    first, second = events[0][1], events[1][1]
    assert (first["clip"], first["start_frame"], first["end_frame"]) == (0, 0, 5)
    assert (second["clip"], second["start_frame"], second["end_frame"]) == (1, 6, 11)
    assert first["text"] and second["history"] == first["text"]  # clips are chained by the previous caption
    r = client.post("/v1/stream", json={**body, "clip": "0.75s"})  # 0.75 s at 8 fps = 6 frames
    assert [e for e, _ in parse_sse(r.text)] == ["caption", "caption", "done"]


def test_full_queue_is_429_with_retry_after(pam_server, client, video):
    """While a 12-clip stream holds the worker, 7 new images (each needs the encoder) arrive: the
    queue of 4 takes 4, the rest are refused at once with Retry-After; the queued ones then run."""
    info, truth, _ = video
    body = {"video_id": info["video_id"], "region": {"box": [float(v) for v in truth.objects[0].boxes[0]]},
            "clip": 1, "max_new_tokens": TOKENS}
    results = []

    def upload(i):
        with httpx.Client(base_url=pam_server.url, timeout=180) as c:
            data = png_bytes(np.full((32, 32, 3), 100 + i, dtype=np.uint8))
            r = c.post("/v1/images", files={"file": (f"{i}.png", data, "image/png")})
            results.append((r.status_code, r.headers.get("retry-after"), r.json()))

    with client.stream("POST", "/v1/stream", json=body) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: caption"
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        list(lines)
    codes = sorted(code for code, _, _ in results)
    assert codes == [200] * 4 + [429] * 3, codes
    for code, retry, body in results:
        if code == 429:
            assert int(retry) >= 1 and body["error"]["type"] == "rate_limit_error" and "queue is full" in body["error"]["message"]
    assert pam_server.health()["status"] == "ok"


def test_client_that_leaves_has_its_queued_work_dropped(pam_server, client, video, image_id):
    """While 12-clip streams hold the worker, a request queued behind them whose client gives up is
    dropped from the queue: it never runs. (Two streams, so that the worker stays busy well past the
    client's 0.5 s: one stream of the tiny model takes ~0.6 s.)"""
    info, truth, _ = video
    before = pam_server.health()["queue"]
    body = {"video_id": info["video_id"], "region": {"box": [float(v) for v in truth.objects[0].boxes[0]]},
            "clip": 1, "max_new_tokens": TOKENS}
    second: list[str] = []

    def queued_stream():
        with httpx.stream("POST", pam_server.url + "/v1/stream", json=body, timeout=120) as r:
            r.read()
            second.append(r.text)

    with client.stream("POST", "/v1/stream", json=body) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: caption"  # the worker is now busy with this stream
        waiting = threading.Thread(target=queued_stream)
        waiting.start()
        while pam_server.health()["queue"]["pending"] < 1:  # the second stream is queued
            time.sleep(0.01)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(pam_server.url + "/v1/segment", json={"image_id": image_id, "regions": [{"box": [0, 0, 9, 9]}]},
                       timeout=httpx.Timeout(30, read=0.5))
        rest = "event: caption\n" + "\n".join(lines)
    waiting.join()
    assert [e for e, _ in parse_sse(rest)].count("caption") == 12
    assert [e for e, _ in parse_sse(second[0])].count("caption") == 12
    after = pam_server.health()["queue"]
    assert after["dropped"] == before["dropped"] + 1
    assert after["done"] == before["done"] + 2  # only the streams ran
