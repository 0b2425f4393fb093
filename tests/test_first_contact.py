"""A new user's first contact with the ``pam`` CLI and the Python API: every malformed input, path or
signal gets one clear line and exit status, no traceback, and no output file left behind or half
written; the inputs that work keep working.

The CLI table runs in ONE subprocess (``CASES_DRIVER`` below): it imports the CLI once and calls
``perceive_anything.cli.main(argv)`` for each row, as the ``pam`` script does (``sys.exit(main())``),
with stdout/stderr captured and any exception that escapes ``main`` recorded as the interpreter
would print it (a traceback). One process instead of ~45 keeps the table under a minute on 2 cores;
the entry point itself and Ctrl-C are tested with real ``pam`` processes below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")

CASES_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
from perceive_anything.cli import main

cases = json.load(open(sys.argv[1]))
results = {}
for case in cases:
    out, err = io.StringIO(), io.StringIO()
    escaped = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(case["argv"])
        except SystemExit as exc:  # argparse and --version exit; the pam script would too
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            escaped = True
            rc = 1
            traceback.print_exc()
    results[case["id"]] = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "escaped": escaped}
json.dump(results, open(sys.argv[2], "w"))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PAM_DEBUG", None)
    return env


# ---------------------------------------------------------------------------------------------- media
@pytest.fixture(scope="module")
def media(tmp_path_factory, tiny_pam_dir):
    """Small inputs, good and bad, shared by every row of the table."""
    from perceive_anything.processing.video import VideoWriter

    root = tmp_path_factory.mktemp("first_contact")
    rng = np.random.default_rng(0)
    img = root / "img.png"
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(img)
    clip = root / "clip.mp4"
    with VideoWriter(clip, fps=10) as w:
        for t in range(12):
            frame = np.zeros((64, 96, 3), np.uint8)
            frame[20:40, 10 + 3 * t : 30 + 3 * t] = (220, 40, 40)
            w.write(frame)
    data = clip.read_bytes()
    trunc = root / "trunc.mp4"
    trunc.write_bytes(data[: len(data) // 3])
    fake = root / "fake.png"
    fake.write_text("not an image")
    mixed = root / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(mixed / "000.png")
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(mixed / "001.png")
    batch = root / "batch"
    batch.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(batch / f"im{i}.png")
    (batch / "im9.png").write_text("broken")
    empty = root / "no_images"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    corrupt = root / "corrupt_model"
    corrupt.mkdir()
    for f in Path(tiny_pam_dir).iterdir():
        if f.is_file():
            (corrupt / f.name).write_bytes(f.read_bytes())
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    afile = root / "afile.txt"
    afile.write_text("x")
    wrong_mask = root / "mask_small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(wrong_mask)
    return {"root": root, "img": img, "clip": clip, "trunc": trunc, "fake": fake, "mixed": mixed,
            "batch": batch, "empty": empty, "corrupt": corrupt, "afile": afile, "tiny": Path(tiny_pam_dir),
            "wrong_mask": wrong_mask}


BOX = "10,10,60,60"
VBOX = "10,20,30,40"
TINY = ["--model", "{tiny}", "--max-new-tokens", "4", "--quiet"]

# id, argv, exit status, text the one-line message must contain, files that must NOT exist afterwards
# ("{out}" is a fresh, empty folder per row: nothing may be left in it but the files the row expects)
ERRORS = [
    # the failures of the issue
    ("task_comma", ["image", "{img}", "--box", BOX, "--task", ","], 2, "--task is empty"),
    ("json_parent_is_file", ["image", "{img}", "--box", BOX, "--json", "{afile}/x.json"], 2, "is not a folder"),
    ("json_is_folder", ["image", "{img}", "--box", BOX, "--json", "{out}"], 2, "is a folder"),
    ("json_parent_missing", ["image", "{img}", "--box", BOX, "--json", "{out}/nope/x.json"], 2, "does not exist"),
    ("json_unknown_ext", ["image", "{img}", "--box", BOX, "--json", "{out}/x.txt"], 2, "unknown extension"),
    ("corrupt_checkpoint", ["image", "{img}", "--box", BOX, "--model", "{corrupt}"], 2, "cannot read checkpoint"),
    ("overlay_unknown_ext", ["image", "{img}", "--box", BOX, *TINY, "--json", "{out}/a.json",
                             "--overlay", "{out}/a.xyz"], 2, "unknown extension"),
    ("overlay_unwritable", ["image", "{img}", "--box", BOX, *TINY, "--json", "{out}/a.json",
                            "--overlay", "/proc/pam-first-contact.png"], 2, "cannot write"),
    ("stream_clip_zero", ["stream", "{clip}", "--box", VBOX, *TINY, "--clip", "0", "--json", "{out}/s.jsonl"],
     2, "at least one frame"),
    ("stream_clip_abc", ["stream", "{clip}", "--box", VBOX, *TINY, "--clip", "abc", "--json", "{out}/s.jsonl"],
     2, "--clip"),
    ("stream_truncated_mp4", ["stream", "{trunc}", "--box", VBOX, *TINY, "--json", "{out}/s.jsonl"], 2, "trunc.mp4"),
    ("stream_max_clips_zero", ["stream", "{clip}", "--box", VBOX, "--max-clips", "0"], 2, "--max-clips"),
    ("negative_box_is_a_value", ["image", "{img}", "--box", "-50,-50,-10,-10"], 2, "lies outside"),
    ("negative_clip_is_a_value", ["stream", "{clip}", "--box", VBOX, "--clip", "-2s"], 2, "'-2s'"),
    ("negative_point_is_a_value", ["image", "{img}", "--point", "-5,7"], 2, "outside"),
    ("video_of_a_photo", ["video", "{img}", "--box", BOX], 2, "still image"),
    ("video_frames_of_two_sizes", ["video", "{mixed}", "--box", VBOX, *TINY, "--json", "{out}/v.json"],
     2, "all frames must have one size"),
    # more first-contact mistakes
    ("unknown_task", ["image", "{img}", "--box", BOX, "--task", "labl"], 2, "unknown task 'labl'"),
    ("video_task_on_image", ["image", "{img}", "--box", BOX, "--task", "video_caption"], 2, "cannot run on an image"),
    ("unknown_lang", ["image", "{img}", "--box", BOX, "--lang", "fr"], 2, "unknown language"),
    ("question_without_task", ["image", "{img}", "--box", BOX, "--question", "why?"], 2, "--question"),
    ("question_task_without_question", ["image", "{img}", "--box", BOX, "--task", "question"], 2, "question"),
    ("max_new_tokens_zero", ["image", "{img}", "--box", BOX, "--max-new-tokens", "0"], 2, "--max-new-tokens"),
    ("video_stride_zero", ["video", "{clip}", "--box", VBOX, "--stride", "0"], 2, "--stride"),
    ("video_fps_negative", ["video", "{clip}", "--box", VBOX, "--fps", "-1"], 2, "--fps"),
    ("video_frame_outside", ["video", "{clip}", "--box", VBOX, "--frame", "99"], 2, "outside the 12 processed frames"),
    ("video_overlay_png", ["video", "{clip}", "--box", VBOX, "--overlay", "{out}/v.png"], 2, "unknown extension"),
    ("unknown_option", ["image", "{img}", "--box", BOX, "--frobnicate"], 2, "--frobnicate"),
    ("no_command", [], 2, "required"),
    # inputs that were already refused well
    ("missing_image", ["image", "{root}/nope.png", "--box", BOX], 2, "not found"),
    ("not_an_image", ["image", "{fake}", "--box", BOX], 2, "cannot read image"),
    ("no_region", ["image", "{img}"], 2, "at least one region"),
    ("box_three_numbers", ["image", "{img}", "--box", "1,2,3"], 2, "expected 4 numbers"),
    ("box_words", ["image", "{img}", "--box", "a,b,c,d"], 2, "comma-separated numbers"),
    ("box_inverted", ["image", "{img}", "--box", "60,60,10,10"], 2, "inverted"),
    ("point_bad_label", ["image", "{img}", "--point", "5,5,7"], 2, "unknown label"),
    ("mask_missing", ["image", "{img}", "--mask", "{root}/nope.png"], 2, "file not found"),
    ("mask_wrong_size", ["image", "{img}", "--mask", "{wrong_mask}"], 2, "but the image is 128x96"),
    ("model_missing", ["image", "{img}", "--box", BOX, "--model", "{root}/no_model"], 2, "no_model"),
    ("device_absent", ["image", "{img}", "--box", BOX, "--device", "cuda:7"], 2, "cuda"),
    ("video_missing", ["video", "{root}/nope.mp4", "--box", VBOX], 2, "not found"),
    ("stream_missing", ["stream", "{root}/nope.mp4", "--box", VBOX], 2, "not found"),
    ("glob_matches_nothing", ["image", "{root}/*.nothing", "--box", BOX], 2, "no file matches"),
    ("folder_without_images", ["image", "{empty}", "--box", BOX], 2, "holds no image files"),
    ("batch_with_overlay", ["image", "{batch}", "--box", BOX, "--overlay", "{out}/o.png"], 2, "--overlay"),
]

# id, argv, exit status, files under {out} that must exist (and parse when JSON)
WORKS = [
    ("image_json_overlay", ["image", "{img}", "--box", BOX, "--point", "30,30", "--task", "label,brief_caption",
                            *TINY, "--json", "{out}/r.json", "--overlay", "{out}/r.png"], 0, ["r.json", "r.png"]),
    ("image_to_stdout_default_model", ["image", "{img}", "--box", BOX, "--task", "label", "--max-new-tokens", "3"],
     0, []),
    ("image_batch_folder", ["image", "{batch}", "--box", BOX, *TINY, "--json", "{out}/b.jsonl"], 1, ["b.jsonl"]),
    ("video_json_overlay", ["video", "{clip}", "--box", VBOX, *TINY, "--json", "{out}/v.json",
                            "--overlay", "{out}/v.mp4"], 0, ["v.json", "v.mp4"]),
    ("stream_two_clips", ["stream", "{clip}", "--box", VBOX, *TINY, "--clip", "5", "--max-clips", "2",
                          "--json", "{out}/s.jsonl"], 0, ["s.jsonl"]),
    ("version", ["--version"], 0, []),
]


def _fill(argv, media, out):
    keys = {k: str(v) for k, v in media.items()}
    keys["out"] = str(out)
    return [a.format(**keys) for a in argv]


@pytest.fixture(scope="module")
def table(media):
    """Run every row in one subprocess; return (results by id, the folder of each row)."""
    cases, outs = [], {}
    for case_id, argv, *_ in ERRORS + WORKS:
        out = media["root"] / "out" / case_id
        out.mkdir(parents=True)
        outs[case_id] = out
        cases.append({"id": case_id, "argv": _fill(argv, media, out)})
    spec, result = media["root"] / "cases.json", media["root"] / "results.json"
    spec.write_text(json.dumps(cases))
    driver = media["root"] / "driver.py"
    driver.write_text(CASES_DRIVER)
    proc = subprocess.run([sys.executable, str(driver), str(spec), str(result)], env=_env(),
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text()), outs


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("pam"), stderr
    return errors[0]


@pytest.mark.parametrize("case_id,argv,status,message", ERRORS, ids=[c[0] for c in ERRORS])
def test_malformed_input_one_line_no_traceback_no_file(table, case_id, argv, status, message):
    results, outs = table
    r = results[case_id]
    assert not r["escaped"], r["stderr"]
    assert r["rc"] == status, r
    line = _one_error_line(r["stderr"])
    assert message in line, line
    # nothing written, nothing half-written, no temporary file left in the output folder
    assert list(outs[case_id].iterdir()) == [], list(outs[case_id].iterdir())


@pytest.mark.parametrize("case_id,argv,status,files", WORKS, ids=[c[0] for c in WORKS])
def test_working_inputs_still_work(table, case_id, argv, status, files):
    results, outs = table
    r = results[case_id]
    assert not r["escaped"] and "Traceback" not in r["stderr"], r["stderr"]
    assert r["rc"] == status, r
    assert sorted(p.name for p in outs[case_id].iterdir()) == sorted(files)  # no temporary file left
    for name in files:
        path = outs[case_id] / name
        if name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".jsonl"):
            for line in path.read_text().splitlines():
                json.loads(line)
        else:
            assert path.stat().st_size > 0
    if case_id == "image_to_stdout_default_model":
        assert json.loads(r["stdout"])["regions"][0]["outputs"][0]["task"] == "label"
        # the embedded model is named once, honestly, with the way to the released one
        assert r["stderr"].count("embedded tiny demo model") == 1 and "--model PAM-3B/" in r["stderr"]
    if case_id == "image_json_overlay":
        d = json.loads((outs[case_id] / "r.json").read_text())
        assert len(d["regions"]) == 2 and [o["task"] for o in d["regions"][0]["outputs"]] == ["label", "brief_caption"]
        assert "embedded tiny demo model" not in r["stderr"]  # --model given
    if case_id == "image_batch_folder":
        records = [json.loads(x) for x in (outs[case_id] / "b.jsonl").read_text().splitlines()]
        assert [Path(rec["source"]).name for rec in records] == ["im0.png", "im1.png", "im9.png"]
        assert "regions" in records[0] and "regions" in records[1]
        assert "cannot read image" in records[2]["error"]
    if case_id == "stream_two_clips":
        events = [json.loads(x) for x in (outs[case_id] / "s.jsonl").read_text().splitlines()]
        assert [e["clip"] for e in events] == [0, 1]
        assert events[0]["history"] is None and events[1]["history"] == events[0]["text"]
    if case_id == "version":
        assert r["stdout"].startswith("pam (perceive-anything) ")


def test_every_option_has_help_and_no_dangling_reference():
    from perceive_anything.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("image", "video", "stream"):
        for action in sub.choices[name]._actions:
            if action.dest == "help":
                continue
            assert action.help, f"pam {name} {action.option_strings or action.dest} has no help"
            assert "see docs" not in action.help and "clcik" not in action.help
    assert "--model PAM-3B/" in parser.epilog


def test_negative_values_reach_their_option():
    from perceive_anything.cli_support import join_negative_values

    assert join_negative_values(["image", "a.png", "--box", "-50,-50,-10,-10", "--clip", "-2s", "--quiet"]) == [
        "image", "a.png", "--box=-50,-50,-10,-10", "--clip=-2s", "--quiet"]
    # an option after --box is still an option, and everything after "--" is left alone
    assert join_negative_values(["--box", "--quiet", "--", "--box", "-1"]) == ["--box", "--quiet", "--", "--box", "-1"]


# ---------------------------------------------------------------------------------------- Ctrl-C
def _pam_process(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "perceive_anything.cli", *args], env=_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _interrupt(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return out, err


def test_ctrl_c_during_stream_keeps_lines_exits_130(media, tmp_path):
    # 12 frames in clips of 1: twelve events, the first one long before the last
    proc = _pam_process(["stream", str(media["clip"]), "--box", VBOX, "--model", str(media["tiny"]),
                         "--clip", "1", "--max-new-tokens", "24", "--quiet"], tmp_path)
    first = proc.stdout.readline()
    assert first, proc.communicate()[1]
    out, err = _interrupt(proc)
    lines = [first] + out.splitlines()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "pam: interrupted", err
    assert 1 <= len(lines) < 12
    for line in lines:
        assert json.loads(line)["type"] == "caption"


def test_ctrl_c_during_video_leaves_no_file_exits_130(media, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    still = Image.open(media["mixed"] / "000.png")
    for i in range(400):  # long enough to be interrupted while tracking
        still.save(frames / f"{i:04d}.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _pam_process(["video", str(frames), "--box", VBOX, "--model", str(media["tiny"]),
                         "--json", str(out_dir / "v.json"), "--max-new-tokens", "4"], tmp_path)
    line = proc.stderr.readline()  # "[pam] loading ... done": the model is loaded, tracking starts
    assert "loading" in line, line + proc.communicate()[1]
    time.sleep(1.0)
    out, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "pam: interrupted", err
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------- Python API
@pytest.fixture(scope="module")
def small_image():
    return np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_api_mask_decisions(tiny_pam, small_image):
    from perceive_anything import mask
    from perceive_anything.processing.regions import RegionError

    m = np.zeros((48, 64), bool)
    m[10:30, 10:40] = True
    with pytest.raises(RegionError, match=r"2-D \(H, W\).*m\.any\(-1\)"):
        tiny_pam.perceive(small_image, mask(np.repeat(m[..., None], 3, axis=2)), task="label", max_new_tokens=1)
    with pytest.raises(RegionError, match="values other than 0 and 1"):
        tiny_pam.perceive(small_image, mask(m * 0.7), task="label", max_new_tokens=1)
    # exact binary masks in any dtype, and (H, W, 1), mean the same region
    ref = tiny_pam.perceive(small_image, mask(m), task="label", max_new_tokens=1)[0].mask
    for variant in (m.astype(np.float32), m.astype(np.uint8) * 255, m[..., None]):
        assert np.array_equal(tiny_pam.perceive(small_image, mask(variant), task="label", max_new_tokens=1)[0].mask, ref)


def test_api_generation_and_image_decisions(tiny_pam, small_image):
    from perceive_anything.generation import GenerationSettings

    with pytest.raises(ValueError, match="temperature must be >= 0"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        tiny_pam.perceive(small_image, [[5, 5, 30, 30]], task="label", temperature=-1)
    with pytest.raises(ValueError, match=r"unknown generation setting\(s\) 'temprature'; valid: .*temperature"):
        tiny_pam.perceive(small_image, [[5, 5, 30, 30]], task="label", temprature=0.1)
    with pytest.raises(ValueError, match="image is empty"):
        tiny_pam.perceive(np.zeros((0, 0, 3), np.uint8), [[0, 0, 1, 1]], task="label")


def test_api_video_decisions(tiny_pam, media):
    from perceive_anything.processing.video import VideoError, open_video

    with pytest.raises(VideoError, match="still image"):
        open_video(media["img"])
    frames = [np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60, 3), np.uint8), np.zeros((30, 60, 3), np.uint8)]
    with pytest.raises(VideoError, match="frame 2 is 60x30 but the video is 60x40"):
        tiny_pam.perceive_video(frames, [[5, 5, 30, 30]], max_new_tokens=1)


def test_region_result_accessors_and_no_cache_deprecation(tiny_pam, small_image):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = tiny_pam.perceive(small_image, [[5, 5, 30, 30]], task=["question", "label"],
                                question="What colour is it?", max_new_tokens=3)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    region = res[0]
    assert region.answer == region.output("question").answer is not None
    assert region.texts == {"question": region.output("question").text, "label": region.output("label").text}


def test_entry_point_version_is_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "--version"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    from perceive_anything import __version__

    assert proc.returncode == 0 and proc.stdout.strip() == f"pam (perceive-anything) {__version__}"
