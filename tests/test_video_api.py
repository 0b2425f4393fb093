"""perceive_video / perceive_stream on real encoded video, with a tiny random model.

Random weights say nothing about *what* is seen, so these tests check what must hold whatever the
weights: every frame gets a mask and a score, the LLM sees 16 frames laid out as in training, prompts
work on any frame and for several objects, streaming chains clips through the previous caption.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

av = pytest.importorskip("av")

from perceive_anything.processing.video import VideoWriter, llm_frame_positions  # noqa: E402
from perceive_anything.results import rle_to_mask  # noqa: E402
from perceive_anything.training.synthetic import generate_video  # noqa: E402


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    """A real H.264 mp4 of a generated shapes video (moving objects), plus the generator's ground truth."""
    video = generate_video(11, num_frames=20, size=128, num_objects=2, allow_exit=False)
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    with VideoWriter(path, fps=10) as w:
        for f in video.frames:
            w.write(f)
    return path, video


def _box(video, obj, t):
    return [float(v) for v in video.objects[obj].boxes[t]]


def test_video_two_objects_every_frame(tiny_pam, clip_mp4):
    path, video = clip_mp4
    res = tiny_pam.perceive_video(path, [_box(video, 0, 0), _box(video, 1, 0)])
    assert res.num_frames == 20 and res.frame_indices == list(range(20))
    assert res.llm_frames == llm_frame_positions(20) and len(res.llm_frames) == 16
    assert [o.obj_id for o in res] == [1, 2]
    for obj in res:
        assert len(obj.rles) == len(obj.scores) == 20
        assert obj.mask(7).shape == (128, 128)
        assert obj.outputs[0].task == "video_caption"
    d = json.loads(res.to_json())
    assert d["num_frames"] == 20 and len(d["objects"][1]["masks_rle"]) == 20
    assert np.array_equal(rle_to_mask(d["objects"][0]["masks_rle"][3]), res[0].mask(3))


def test_video_tasks_sharing_one_block_answer_as_each_task_alone(tiny_pam, clip_mp4):
    """Two tasks of one object decode on one prefill of its 16-frame block (SharedPrompt); each
    task asked alone is one row in one pass. Same tokens."""
    path, video = clip_mp4
    question = "Where does it go?"
    both = tiny_pam.perceive_video(path, _box(video, 0, 0), num_frames=8, task=["video_caption", "question"],
                                   question=question, max_new_tokens=12)
    alone = [tiny_pam.perceive_video(path, _box(video, 0, 0), num_frames=8, task=t, max_new_tokens=12,
                                     **({"question": question} if t == "question" else {}))[0].outputs[0]
             for t in ("video_caption", "question")]
    assert [o.token_ids for o in both[0].outputs] == [o.token_ids for o in alone]


def test_short_video_uses_repeated_frames(tiny_pam, clip_mp4):
    path, video = clip_mp4
    res = tiny_pam.perceive_video(path, _box(video, 0, 0), num_frames=5)
    assert res.num_frames == 5
    assert res.llm_frames == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4]
    assert len(res[0].rles) == 5
    one = tiny_pam.perceive_video(path, _box(video, 0, 0), num_frames=1)
    assert one.num_frames == 1 and one.llm_frames == [0] * 16


def test_prompt_on_a_middle_frame_covers_the_whole_video(tiny_pam, clip_mp4):
    path, video = clip_mp4
    res = tiny_pam.perceive_video(path, _box(video, 0, 8), frame=8)
    assert res[0].prompt_frame == 8
    assert len(res[0].rles) == 20 and len(res[0].scores) == 20  # backward pass filled frames 0..7
    with pytest.raises(ValueError, match="outside the 20 processed frames"):
        tiny_pam.perceive_video(path, _box(video, 0, 0), frame=20)


def test_stride_and_fps_sampling(tiny_pam, clip_mp4):
    path, video = clip_mp4
    res = tiny_pam.perceive_video(path, _box(video, 0, 0), stride=4)
    assert res.frame_indices == [0, 4, 8, 12, 16]
    res = tiny_pam.perceive_video(path, _box(video, 0, 0), fps=2.5)
    assert res.frame_indices == [0, 4, 8, 12, 16]


def test_object_absent_everywhere_gives_empty_masks(tmp_path, clip_mp4):
    """A model whose object-score head says 'absent' on every frame: negative scores, empty masks, no crash."""
    from tiny_model import build_tiny_pam

    from perceive_anything import PerceiveAnything

    pam = PerceiveAnything.from_pretrained(build_tiny_pam(tmp_path / "absent", object_bias=-5.0))
    path, video = clip_mp4
    res = pam.perceive_video(path, _box(video, 0, 0), num_frames=6)
    assert all(s < 0 for s in res[0].scores)
    assert all(not res[0].mask(t).any() for t in range(6))
    events = list(pam.perceive_stream(path, [_box(video, 0, 0)], clip=4, max_clips=2))
    assert [e.present for e in events] == [False, False]
    assert events[1].box == events[0].box  # no mask to re-derive a box from: the last box is kept


def test_stream_chains_history_and_boxes(tiny_pam, clip_mp4):
    path, video = clip_mp4
    events = list(tiny_pam.perceive_stream(path, [_box(video, 0, 0), _box(video, 1, 0)], clip=8))
    assert [(e.clip, e.obj_id) for e in events] == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert [(e.start_frame, e.end_frame) for e in events[::2]] == [(0, 7), (8, 15), (16, 19)]
    first = {e.obj_id: e for e in events if e.clip == 0}
    second = {e.obj_id: e for e in events if e.clip == 1}
    for o in (1, 2):
        assert first[o].history is None
        assert second[o].history == first[o].text
        if first[o].last_box is not None:
            assert second[o].box == [float(v) for v in first[o].last_box]


def test_stream_paper_mode_carries_the_last_frame(tiny_pam, clip_mp4):
    path, video = clip_mp4
    events = list(tiny_pam.perceive_stream(path, [_box(video, 0, 0)], clip="0.8s", mode="paper"))
    # 10 fps: 0.8 s = 8 frames; clips after the first start on the previous clip's last frame
    assert [(e.start_frame, e.end_frame) for e in events] == [(0, 7), (7, 15), (15, 19)]
    carried = list(tiny_pam.perceive_stream(path, [_box(video, 0, 0)], clip=8, carry_memory=True))
    assert [(e.start_frame, e.end_frame) for e in carried] == [(0, 7), (8, 15), (16, 19)]


def test_stream_from_a_python_iterator(tiny_pam, clip_mp4):
    _, video = clip_mp4
    frames = (f for f in video.frames)  # a live-like source: length unknown, consumed once
    events = list(tiny_pam.perceive_stream(frames, [_box(video, 0, 0)], clip=10))
    assert [e.clip for e in events] == [0, 1]


def test_bad_stream_arguments(tiny_pam, clip_mp4):
    path, video = clip_mp4
    with pytest.raises(ValueError, match="unknown streaming mode"):
        next(tiny_pam.perceive_stream(path, [_box(video, 0, 0)], mode="fast"))
    with pytest.raises(ValueError, match="frame count like 32 or a duration"):
        next(tiny_pam.perceive_stream(path, [_box(video, 0, 0)], clip="two seconds"))


def _pam(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "perceive_anything.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_video_json_and_overlay(tiny_pam_dir, clip_mp4, tmp_path):
    path, video = clip_mp4
    box = ",".join(str(int(v)) for v in _box(video, 0, 0))
    out, ov = tmp_path / "v.json", tmp_path / "v.mp4"
    r = _pam("video", str(path), "--box", box, "--model", str(tiny_pam_dir), "--json", str(out), "--overlay", str(ov))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["num_frames"] == 20 and len(d["objects"]) == 1
    from perceive_anything.processing.video import open_video

    written = open_video(ov)
    # every frame, with the captions' legend beside the square video
    assert written.info.height == 128 and written.info.width > 128 and written.count_frames() == 20


def test_cli_stream_prints_json_lines(tiny_pam_dir, clip_mp4):
    path, video = clip_mp4
    box = ",".join(str(int(v)) for v in _box(video, 0, 0))
    r = _pam("stream", str(path), "--box", box, "--clip", "8", "--model", str(tiny_pam_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert [x["clip"] for x in lines] == [0, 1, 2] and all(x["type"] == "caption" for x in lines)


def test_cli_video_errors_are_one_line(tiny_pam_dir, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    r = _pam("video", str(bad), "--box", "1,1,5,5", "--model", str(tiny_pam_dir))
    assert r.returncode == 2 and "broken.mp4" in r.stderr and "Traceback" not in r.stderr
    r = _pam("stream", "rtsp://127.0.0.1:9/cam", "--box", "1,1,5,5", "--model", str(tiny_pam_dir))
    assert r.returncode == 2 and "cannot open stream" in r.stderr


MEDIA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.mark.skipif(not (MEDIA / "03_bedroom.mp4").exists(), reason="shared sample clips absent")
def test_cli_on_the_sample_clips(tiny_pam_dir, tmp_path):
    """pam video / pam stream on the real sample clips (notebook boxes, reference §6/§7)."""
    out = tmp_path / "bedroom.json"
    r = _pam("video", str(MEDIA / "03_bedroom.mp4"), "--box", "295,2,534,404", "--frames", "32",
             "--model", str(tiny_pam_dir), "--json", str(out), "--overlay", str(tmp_path / "bedroom.mp4"), "--quiet")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["video_size"] == {"width": 960, "height": 540} and d["num_frames"] == 32
    assert d["frame_indices"] == np.linspace(0, 199, 32).astype(int).tolist()
    r = _pam("stream", str(MEDIA / "02_juggle.mp4"), "--box", "587,32,838,682", "--clip", "1s", "--stride", "3",
             "--max-clips", "2", "--model", str(tiny_pam_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    events = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert [e["clip"] for e in events] == [0, 1]
    assert events[0]["end_frame"] == 21 and events[1]["start_frame"] == 24  # 24 fps / stride 3 -> 8 frames a clip
