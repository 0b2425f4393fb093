"""PAM-data training format: reader on hand-written official-style records, errors, sampling,
and the generator -> writer -> reader round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceive_anything.training import synthetic as S
from perceive_anything.training.data import (
    TASK_PROMPTS,
    PamDataError,
    apply_sampling_strategy,
    load_pam_records,
    video_caption_prompt,
    write_pam_records,
)

# Four records in the official format (reference §10.1), written by hand.
BOX_ONLY = {
    "id": "img-box", "type": "image", "image": "coco/000001.jpg",
    "conversations": [{"from": "human", "value": "<image>\nProvide a concise caption for this subject."},
                      {"from": "gpt", "value": "A brown dog."}],
    "bbox": [10.7, 20.2, 30.5, 40.9], "points": None, "labels": None,
}
POINTS_ONLY = {
    "id": "img-pts", "type": "image", "image": "coco/000002.jpg",
    "conversations": [{"role": "user", "content": "What is this? <image>"},
                      {"role": "assistant", "content": "cat"}],
    "bbox": None,
    "points": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], "labels": [1, 1, 0, 1, 0, 1],
}
BOTH = {
    "type": "image", "image": "coco/000003.jpg",
    "conversations": [{"from": "human", "value": "<image>\nClassify this subject and provide its label."},
                      {"from": "gpt", "value": "bicycle"}],
    "bbox": [0, 0, 50, 60], "points": [[5, 5], [25, 30]], "labels": [1, 1],
}
VIDEO = {
    "id": "vid-1", "type": "video", "image_root": "frames/V_abc",
    "frames": ["00000.jpg", "00001.jpg", "00002.jpg"],
    "conversations": [{"from": "human", "value": TASK_PROMPTS["video_cap_en"]},
                      {"from": "gpt", "value": "A man walks to the left."}],
    "bbox": [[295, 2, 239, 402], [296, 2, 239, 402], None],
    "points": [[[399, 72], [402, 168], [385, 283], [390, 300]], [[1, 1]], [[2, 2]]],
    "labels": [[1, 1, 1, 1], [1], [1]],
}


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_reader_on_official_style_records(tmp_path):
    f = _write_jsonl(tmp_path / "mixed.jsonl", [BOX_ONLY, POINTS_ONLY, BOTH, VIDEO])
    box, pts, both, vid = load_pam_records(f, seed=0)

    assert box.type == "image" and box.id == "img-box" and box.source == f"{f}:1"
    assert box.image == str(tmp_path / "coco/000001.jpg")   # relative to the data file's directory
    assert box.prompt_kind == "box" and box.points is None
    assert box.box == [10, 20, 41, 61]                       # int() truncation of x, y, x+w, y+h
    assert box.prompt == "<image>\nProvide a concise caption for this subject." and box.target == "A brown dog."

    assert pts.prompt_kind == "points" and pts.box is None
    assert 1 <= len(pts.points) <= 4 and len(pts.labels) == len(pts.points)
    orig = [tuple(p) for p in POINTS_ONLY["points"]]
    idx = [orig.index(tuple(p)) for p in pts.points]
    assert idx == sorted(idx) and pts.labels == [POINTS_ONLY["labels"][i] for i in idx]
    # role/content accepted and normalised; <image> moved to the front
    assert pts.conversations == [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "cat"}]

    assert both.id is None and both.prompt_kind in ("box", "points")

    assert vid.type == "video" and vid.image is None
    assert vid.frames == [str(tmp_path / "frames/V_abc" / n) for n in VIDEO["frames"]]
    assert vid.candidates["box"] == [295, 2, 534, 404]       # frame 0 only (reference §6 example)
    assert vid.candidates["points"] == VIDEO["points"][0]
    if vid.prompt_kind == "points":
        assert 1 <= len(vid.points) <= 3


def test_reader_is_deterministic_and_choice_is_fair(tmp_path):
    f = _write_jsonl(tmp_path / "d.jsonl", [BOTH, POINTS_ONLY, VIDEO])
    a = load_pam_records(f, seed=3)
    b = load_pam_records(f, seed=3)
    assert [(s.prompt_kind, s.box, s.points) for s in a] == [(s.prompt_kind, s.box, s.points) for s in b]

    kinds = [load_pam_records(f, seed=s)[0].prompt_kind for s in range(200)]
    assert 60 < kinds.count("box") < 140                     # both present -> 50/50
    img_sizes = {len(load_pam_records(f, seed=s)[1].points) for s in range(200)}
    assert img_sizes == {1, 2, 3, 4}                         # uniform in [1, 4] for images
    vid_sizes = {len(x.points) for x in (load_pam_records(f, seed=s)[2] for s in range(200)) if x.prompt_kind == "points"}
    assert vid_sizes == {1, 2, 3}                            # [1, 3] for videos

    s0 = a[1]
    redrawn = {len(s0.resample_prompt(random.Random(k)).points) for k in range(100)}
    assert redrawn == {1, 2, 3, 4}


def test_image_folder_overrides_base(tmp_path):
    f = _write_jsonl(tmp_path / "d.jsonl", [BOX_ONLY])
    (s,) = load_pam_records(f, image_folder="/data/imgs")
    assert s.image == "/data/imgs/coco/000001.jpg"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("bbox"), "missing required key 'bbox'"),
    (lambda r: r.pop("labels"), "missing required key 'labels'"),
    (lambda r: r.update(type="audio"), "'type' must be 'image' or 'video'"),
    (lambda r: r.pop("type"), "missing required key 'type'"),
    (lambda r: r.update(bbox=None), "both null"),
    (lambda r: r.update(bbox=[1, 2, 3]), "must be 4 numbers"),
    (lambda r: r.update(points=[[1, 2]], labels=None), "'labels' is null"),
    (lambda r: r.update(points=[[1, 2]], labels=[1, 0]), "as long as 'points'"),
    (lambda r: r.update(conversations=[{"from": "human", "value": "no placeholder"},
                                       {"from": "gpt", "value": "x"}]), "<image>"),
    (lambda r: r.update(conversations=[{"speaker": "human", "text": "<image>"}]), "'from'/'value' or 'role'/'content'"),
    (lambda r: r.update(conversations=[{"from": "human", "value": "<image>\nhi"}]), "no gpt"),
    (lambda r: r.pop("image"), "needs 'image'"),
])
def test_reader_errors_name_file_and_line(tmp_path, mutate, message):
    bad = json.loads(json.dumps(BOX_ONLY))
    mutate(bad)
    f = _write_jsonl(tmp_path / "bad.jsonl", [BOX_ONLY, bad])
    with pytest.raises(PamDataError) as ei:
        load_pam_records(f)
    assert str(ei.value).startswith(f"{f}:2: ") and message in str(ei.value)


def test_reader_errors_json_and_yaml(tmp_path):
    f = tmp_path / "broken.jsonl"
    f.write_text(json.dumps(BOX_ONLY) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(PamDataError, match=r"broken\.jsonl:3: invalid JSON"):
        load_pam_records(f)
    g = tmp_path / "list.json"
    g.write_text(json.dumps([BOX_ONLY, {"type": "image"}]), encoding="utf-8")
    with pytest.raises(PamDataError, match=r"list\.json\[record 1\]: missing required key 'bbox'"):
        load_pam_records(g)
    y = tmp_path / "cfg.yaml"
    y.write_text("datasets:\n  - sampling_strategy: all\n", encoding="utf-8")
    with pytest.raises(PamDataError, match="json_path"):
        load_pam_records(y)
    y.write_text("datasets:\n  - json_path: list.json\n    sampling_strategy: sometimes\n", encoding="utf-8")
    g.write_text(json.dumps([BOX_ONLY]), encoding="utf-8")
    with pytest.raises(PamDataError, match="unknown sampling_strategy"):
        load_pam_records(y)


def test_json_file_and_yaml_sampling(tmp_path):
    recs = [dict(BOX_ONLY, id=f"r{i}") for i in range(10)]
    (tmp_path / "a.json").write_text(json.dumps(recs), encoding="utf-8")
    _write_jsonl(tmp_path / "b.jsonl", recs)
    assert [s.id for s in load_pam_records(tmp_path / "a.json")] == [f"r{i}" for i in range(10)]
    y = tmp_path / "mix.yaml"
    y.write_text("datasets:\n"
                 "  - json_path: a.json\n    sampling_strategy: first:3\n"
                 "  - json_path: b.jsonl\n    sampling_strategy: end:20%\n"
                 "  - json_path: b.jsonl\n    sampling_strategy: random:4\n"
                 "  - json_path: a.json\n", encoding="utf-8")
    ids = [s.id for s in load_pam_records(y, seed=1)]
    assert ids[:3] == ["r0", "r1", "r2"] and ids[3:5] == ["r8", "r9"] and len(ids) == 3 + 2 + 4 + 10
    assert len(set(ids[5:9])) == 4
    assert ids == [s.id for s in load_pam_records(y, seed=1)]


def test_sampling_strategy_unit():
    r = list(range(10))
    rng = random.Random(0)
    assert apply_sampling_strategy(r, "all", rng) == r
    assert apply_sampling_strategy(r, "first:15%", rng) == [0, 1]     # ceil(1.5)
    assert apply_sampling_strategy(r, "end:0", rng) == []
    assert sorted(apply_sampling_strategy(r, "random:100%", rng)) == r
    with pytest.raises(PamDataError):
        apply_sampling_strategy(r, "first:x", rng)


def test_video_prompts():
    assert video_caption_prompt("en") == TASK_PROMPTS["video_cap_en"]
    assert video_caption_prompt("zh").endswith("历史描述：无")
    assert video_caption_prompt("zh", None, streaming=True).endswith("历史描述：None")
    assert video_caption_prompt("en", "A cat sits.", streaming=True).endswith("Previous caption: A cat sits.")


def test_round_trip_generator_writer_reader(tmp_path):
    scenes = [S.generate_scene(s, size=96) for s in (1, 2)]
    video = S.generate_video(3, num_frames=6, size=96)
    stream = S.generate_stream(4, num_clips=3, frames_per_clip=4, size=96)
    files = write_pam_records(scenes + [video, stream], tmp_path, seed=0, save_masks=True)
    assert "shapes_boxNpoint_obj_label_exp_en.jsonl" in files and "shapes_boxNpoint_obj_briefCap_ch.jsonl" in files
    assert "shapes_boxNpoint_video_obj_cap_en.jsonl" in files and "shapes_boxNpoint_stream_video_obj_cap_ch.jsonl" in files

    samples = load_pam_records(files["shapes.yaml"], seed=0)
    by_id = {s.id: s for s in samples}
    n_img = sum(len(sc.objects) for sc in scenes) * 4 * 2
    n_vid = len(video.objects) * 2
    assert sum(s.type == "image" for s in samples) == n_img
    assert sum("_vid" in s.id for s in samples) == n_vid

    for si, sc in enumerate(scenes):
        png = np.asarray(Image.open(tmp_path / f"images/shapes_img{si:06d}.png"))
        assert np.array_equal(png, sc.image)                 # PNG is lossless
        for o in sc.objects:
            for lang, tag in (("en", "en"), ("zh", "ch")):
                s = by_id[f"shapes_img{si:06d}_obj{o.index}_label_exp_{tag}"]
                assert s.prompt == TASK_PROMPTS[f"explain_{tag}"] and s.target == o.explanation(lang)
                assert by_id[f"shapes_img{si:06d}_obj{o.index}_briefCap_{tag}"].target == o.brief_caption[lang]
                assert by_id[f"shapes_img{si:06d}_obj{o.index}_detailCap_{tag}"].target == o.detailed_caption[lang]
                assert by_id[f"shapes_img{si:06d}_obj{o.index}_label_{tag}"].target == o.label[lang]
            assert s.candidates["box"] == list(o.box)        # xywh written, xyxy read back exactly
            assert all(o.mask[y, x] for x, y in s.candidates["points"])
            assert np.array_equal(np.asarray(Image.open(tmp_path / s.extra["mask"])) > 0, o.mask)
            assert Path(s.image).is_file()

    for o in video.objects:
        s = by_id[f"shapes_vid000002_obj{o.index}_en"]
        assert s.prompt == TASK_PROMPTS["video_cap_en"] and s.target == o.caption()["en"]
        assert len(s.frames) == 6 and all(Path(p).is_file() for p in s.frames)
        assert s.candidates["box"] == list(o.boxes[0])

    for o in stream.objects:
        for k in range(3):
            sid = f"shapes_str000003_obj{o.index}_clip{k}_en"
            if sid not in by_id:      # skipped: object hidden on that clip's first frame
                continue
            s = by_id[sid]
            hist = "None" if k == 0 else o.events[k - 1].caption["en"]
            assert s.prompt == video_caption_prompt("en", hist if k else None, streaming=True)
            assert s.target == o.events[k].caption["en"]
            assert [Path(p).name for p in s.frames] == [f"{t:05d}.jpg" for t in range(4 * k, 4 * k + 4)]
            zh = by_id[f"shapes_str000003_obj{o.index}_clip{k}_ch"]
            assert zh.prompt.endswith("历史描述：" + ("None" if k == 0 else o.events[k - 1].caption["zh"]))


def test_writer_prompt_modes_and_cli(tmp_path):
    sc = S.generate_scene(5, size=64)
    f = write_pam_records([sc], tmp_path / "box", prompt_mode="box", image_tasks=["briefCap"], languages=["en"])
    assert set(f) == {"shapes_box_obj_briefCap_en.jsonl", "shapes.yaml"}
    rec = json.loads(f["shapes_box_obj_briefCap_en.jsonl"].read_text().splitlines()[0])
    assert rec["points"] is None and rec["labels"] is None and len(rec["bbox"]) == 4
    f = write_pam_records([sc], tmp_path / "pt", prompt_mode="point", image_tasks=["label"], languages=["zh"])
    rec = json.loads(f["shapes_point_obj_label_ch.jsonl"].read_text(encoding="utf-8").splitlines()[0])
    assert rec["bbox"] is None and len(rec["points"]) == 4 and rec["labels"] == [1, 1, 1, 1]

    S.main(["--out", str(tmp_path / "cli"), "--images", "2", "--videos", "1", "--streams", "1",
            "--seed", "7", "--size", "64", "--frames", "4", "--clips", "2"])
    first = (tmp_path / "cli" / "shapes_boxNpoint_obj_briefCap_en.jsonl").read_text()
    assert len(load_pam_records(tmp_path / "cli" / "shapes.yaml")) > 0
    S.main(["--out", str(tmp_path / "cli2"), "--images", "2", "--seed", "7", "--size", "64"])
    assert (tmp_path / "cli2" / "shapes_boxNpoint_obj_briefCap_en.jsonl").read_text() == first  # deterministic


def test_writer_stream_carry_last_frame_and_negative_points(tmp_path):
    stream = S.generate_stream(4, num_clips=2, frames_per_clip=4, size=96)
    files = write_pam_records([stream], tmp_path, stream_carry_last_frame=True, negative_points=1, languages=["en"])
    recs = [json.loads(x) for x in files["shapes_boxNpoint_stream_video_obj_cap_en.jsonl"].read_text().splitlines()]
    clip1 = [r for r in recs if "_clip1_" in r["id"]]
    assert clip1, "some object must be visible at the start of clip 1"
    for r in clip1:
        o = stream.objects[int(r["id"].split("_obj")[1].split("_")[0])]
        assert r["frames"] == ["00003.jpg", "00004.jpg", "00005.jpg", "00006.jpg", "00007.jpg"]
        x0, y0, x1, y1 = o.boxes[3]
        assert r["bbox"][0] == [x0, y0, x1 - x0, y1 - y0]     # prompt from the carried frame
        assert r["labels"][0].count(0) == 1 and r["labels"][0].count(1) == 3
        for (x, y), lab in zip(r["points"][0], r["labels"][0]):
            assert o.masks[3][y, x] == bool(lab)
