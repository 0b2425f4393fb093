"""``pam annotate``: records, resume after a real ``kill -9``, bad inputs, exports, and the Ray path.

Every run uses the embedded tiny model with short generations (``--max-new-tokens``) so that the
pipeline, not the LLM, is what takes the time.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from perceive_anything.checkpoints import embedded_model_dir

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="no embedded model in this checkout")

FAST = ["--max-new-tokens", "4", "--max-regions", "4", "--threads", "1", "--quiet"]


def _pam(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "perceive_anything.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def _content(rec: dict) -> dict:
    """A record without its timings."""
    return {k: v for k, v in rec.items() if k not in ("seconds", "timings")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Generated scenes in nested folders, plus one corrupt image."""
    from PIL import Image

    from perceive_anything.training.synthetic import generate_scene

    root = tmp_path_factory.mktemp("ds")
    scenes = {}
    for i in range(6):
        rel = f"{'a' if i % 2 else 'b/c'}/scene{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        scene = generate_scene(500 + i, size=128, num_objects=(2, 3))
        Image.fromarray(scene.image).save(root / rel)
        scenes[rel] = scene
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root, scenes


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):
    """One complete single-process run over the dataset (shared by the export tests)."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("run") / "out"
    proc = _pam("annotate", root, "--out", out, "--everything", *FAST)
    assert proc.returncode == 1, proc.stderr  # 1: the corrupt image failed, everything else done
    return out, proc


def test_records_and_summary(dataset, finished):
    root, scenes = dataset
    out, proc = finished
    recs = _records(out)
    assert sorted(r["id"] for r in recs) == sorted(list(scenes) + ["a/corrupt.jpg"])
    bad = [r for r in recs if r["error"]]
    assert [r["id"] for r in bad] == ["a/corrupt.jpg"] and "cannot read image" in bad[0]["error"]
    for r in recs:
        if r["error"]:
            continue
        assert r["model"] == "tiny-shapes" and r["kind"] == "image" and r["seconds"] > 0
        assert r["image_size"] == {"width": 128, "height": 128}
        assert 1 <= len(r["regions"]) <= 4
        for reg in r["regions"]:
            assert {"mask_rle", "bbox", "area", "iou", "stability_score"} <= set(reg)
            assert [o["task"] for o in reg["outputs"]] == ["label", "brief_caption"]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["items"] == 7 and summary["done"] == 6 and summary["failed"] == 1 and summary["skipped"] == 0
    assert "1 failed" in proc.stderr and "a/corrupt.jpg" in proc.stderr

    # the same command again: nothing to do but the failed item (retried, still failing)
    again = _pam("annotate", root, "--out", out, "--everything", *FAST)
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 6 and summary["done"] == 0 and summary["failed"] == 1
    assert [_content(r) for r in _records(out) if not r["error"]] == [_content(r) for r in recs if not r["error"]]


def test_resume_after_kill_9(dataset, tmp_path):
    root, scenes = dataset
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "perceive_anything.cli", "annotate", str(root), "--out", str(out), "--everything", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    written = 0
    while time.time() < deadline and proc.poll() is None:
        shards = list((out / "shards").glob("*.jsonl")) if (out / "shards").is_dir() else []
        written = sum(s.read_bytes().count(b"\n") for s in shards)
        if written >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "records.jsonl").exists()
    # what a kill inside a write leaves: a cut line at the end of the shard
    shard = next((out / "shards").glob("*.jsonl"))
    with open(shard, "ab") as f:
        f.write(b'{"version": 1, "id": "b/c/scene0.png", "regio')

    done = _pam("annotate", root, "--out", out, "--everything", *FAST)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= 1 and summary["skipped"] + summary["done"] + summary["failed"] == 7
    recs = _records(out)
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(list(scenes) + ["a/corrupt.jpg"])  # every item exactly once
    for shard in (out / "shards").glob("*.jsonl"):  # every line of every shard parses
        for line in shard.read_text().splitlines():
            json.loads(line)


def test_refuses_to_mix_settings(finished, dataset):
    root, _ = dataset
    out, _ = finished
    proc = _pam("annotate", root, "--out", out, "--everything", "--tasks", "label", *FAST)
    assert proc.returncode == 2
    assert "different command" in proc.stderr and "tasks" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_inputs(tmp_path, dataset):
    root, scenes = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _pam("annotate", empty, "--out", tmp_path / "o1", "--everything")
    assert proc.returncode == 2 and "no images or videos" in proc.stderr
    proc = _pam("annotate", tmp_path / "missing", "--out", tmp_path / "o2", "--everything")
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = _pam("annotate", root, "--out", tmp_path / "o3")
    assert proc.returncode == 2 and "--everything" in proc.stderr
    proc = _pam("annotate", root, "--out", tmp_path / "o4", "--everything", "--tasks", "video_caption")
    assert proc.returncode == 2 and "image tasks" in proc.stderr
    notjson = tmp_path / "bad.json"
    notjson.write_text("{not json")
    proc = _pam("annotate", notjson, "--out", tmp_path / "o5")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    for p in (proc,):
        assert "Traceback" not in p.stderr


def test_coco_prompts_and_text_list(tmp_path, dataset):
    """A COCO JSON as prompts: good boxes and masks are described; a box outside the image and a broken
    RLE make error records while the other images are done. A text list with a missing file likewise."""
    from perceive_anything.results import mask_to_rle

    root, scenes = dataset
    names = sorted(scenes)
    images, anns = [], []
    for i, name in enumerate(names[:4]):
        images.append({"id": i + 10, "file_name": name, "width": 128, "height": 128})
        obj = scenes[name].objects[0]
        x1, y1, x2, y2 = obj.box
        anns.append({"id": 100 + i, "image_id": i + 10, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1})
    anns.append({"id": 200, "image_id": 11, "segmentation": mask_to_rle(scenes[names[1]].objects[1].mask),
                 "category_id": 1})
    anns.append({"id": 300, "image_id": 12, "bbox": [100, 100, 60, 60], "category_id": 1})  # outside 128x128
    anns.append({"id": 400, "image_id": 13, "segmentation": {"size": [128, 128], "counts": "!!broken"}, "category_id": 1})
    coco = tmp_path / "prompts.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    out = tmp_path / "out"
    proc = _pam("annotate", root, "--prompts", coco, "--out", out, "--tasks", "label", *FAST)
    assert proc.returncode == 1, proc.stderr
    recs = {r["id"]: r for r in _records(out)}
    assert set(recs) == {"coco:10", "coco:11", "coco:12", "coco:13"}
    assert "outside the 128x128 image" in recs["coco:12"]["error"]
    assert "broken RLE" in recs["coco:13"]["error"]
    ok = recs["coco:11"]
    assert ok["error"] is None and [r["coco_annotation_id"] for r in ok["regions"]] == [101, 200]
    from perceive_anything.results import rle_to_mask
    from perceive_anything.training.eval_segmentation import binary_iou

    # a mask prompt is SAM 2's mask-as-output (resized to the model's input and back): nearly itself
    assert binary_iou(rle_to_mask(ok["regions"][1]["mask_rle"]), scenes[names[1]].objects[1].mask) >= 0.95

    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images and a missing one\n{root / names[0]}\n{names[1]}\nnope/missing.png\n")
    (tmp_path / names[1]).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / names[1]).write_bytes((root / names[1]).read_bytes())
    out2 = tmp_path / "out2"
    proc = _pam("annotate", listing, "--out", out2, "--everything", *FAST)
    recs = {r["id"]: r for r in _records(out2)}
    assert len(recs) == 3 and "not found" in recs["nope/missing.png"]["error"]
    assert recs[names[1]]["error"] is None


def test_coco_and_supervision_exports(finished):
    from pycocotools.coco import COCO

    out, _ = finished
    recs = [r for r in _records(out) if not r["error"]]
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == len(recs)
    assert len(coco.getAnnIds()) == sum(len(r["regions"]) for r in recs)
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() == ann["area"]
        assert ann["label"] in names and coco.loadCats(ann["category_id"])[0]["name"] == ann["label"]
        assert ann["caption"] and 0 <= ann["score"] <= 1.5

    sv = pytest.importorskip("supervision")
    from perceive_anything.annotation import load_detections

    dets = load_detections(out / "coco.json")
    assert set(dets) == {r["id"] for r in recs}
    for r in recs:
        d = dets[r["id"]]
        assert isinstance(d, sv.Detections) and len(d) == len(r["regions"])
        assert list(d.data["label"]) == [reg["outputs"][0]["label"] for reg in r["regions"]]
        assert list(d.data["caption"]) == [reg["outputs"][1]["caption"] for reg in r["regions"]]
        assert d.mask.shape == (len(d), 128, 128)
        assert np.array_equal(d.mask.sum(axis=(1, 2)), [reg["area"] for reg in r["regions"]])


def test_ray_path_gives_the_same_records(finished, dataset, tmp_path):
    ray = pytest.importorskip("ray")
    from perceive_anything.annotation import Settings, annotate, discover
    from perceive_anything.everything import EverythingConfig

    root, _ = dataset
    out, _ = finished
    every = discover(root)
    items = [i for i in every if i.id == "a/corrupt.jpg"] + [i for i in every if i.id != "a/corrupt.jpg"][:3]
    settings = Settings(mode="everything", everything=asdict(EverythingConfig(max_regions=4)),
                        generation={"max_new_tokens": 4})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = annotate(items, str(tmp_path / "ray"), settings, str(root), ray="auto", num_workers=2,
                           batch_size=1, progress=False)
    finally:
        ray.shutdown()
    assert summary.done == 3 and summary.failed == 1
    ray_recs = {r["id"]: _content(r) for r in _records(tmp_path / "ray")}
    single = {r["id"]: _content(r) for r in _records(out)}
    assert set(ray_recs) == {i.id for i in items}
    for key, rec in ray_recs.items():
        want = dict(single[key])
        if rec["error"]:  # the path is the same file; the message names it the same way
            assert rec["error"] == want["error"]
        else:
            assert rec == want
