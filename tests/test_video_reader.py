"""The video input layer on real encoded video (PyAV), folders, lists and unreachable streams."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from perceive_anything.processing.video import (  # noqa: E402
    Sampling,
    VideoError,
    VideoWriter,
    linspace_indices,
    open_video,
)

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def _write_clip(path, n=24, size=(96, 64), fps=12):
    with VideoWriter(path, fps=fps) as w:
        for i in range(n):
            arr = np.zeros((size[1], size[0], 3), np.uint8)
            arr[:, :, 0] = (i * 10) % 255
            arr[10:30, 4 + 2 * i : 24 + 2 * i] = 255
            w.write(arr)
    return path


def test_written_mp4_decodes_lazily_with_every_sampling(tmp_path):
    p = _write_clip(tmp_path / "clip.mp4")
    v = open_video(p)
    assert (v.info.width, v.info.height) == (96, 64)
    frames = list(v.frames())
    assert len(frames) == 24 and [f.index for f in frames] == list(range(24))
    assert frames[0].image.size == (96, 64)
    # the bright square moves right: its left edge follows the frame index
    cols = [int(np.argmax(f.array[20, :, 1] > 128)) for f in frames[:5]]
    assert cols == sorted(cols) and cols[-1] > cols[0]
    assert [f.index for f in v.frames(Sampling(stride=5))] == [0, 5, 10, 15, 20]
    assert [f.index for f in v.frames(Sampling(count=4))] == linspace_indices(24, 4) == [0, 7, 15, 23]
    by_fps = list(v.frames(Sampling(fps=3)))
    assert [f.index for f in by_fps] == [0, 4, 8, 12, 16, 20]
    assert [f.index for f in v.frames(Sampling(start=3, max_frames=2))] == [3, 4]


@pytest.mark.skipif(not (MEDIA / "02_juggle.mp4").exists(), reason="shared sample media absent")
@pytest.mark.parametrize("name, size", [("02_juggle.mp4", (1280, 720)), ("03_bedroom.mp4", (960, 540))])
def test_real_sample_clips(name, size):
    v = open_video(MEDIA / name)
    assert (v.info.width, v.info.height) == size and v.info.fps > 0
    first = list(v.frames(Sampling(count=3)))
    assert len(first) == 3 and first[-1].index == v.info.num_frames - 1
    assert first[0].image.size == size


def test_folder_and_list_sources(tmp_path):
    for i in (10, 2, 1):
        Image.new("RGB", (8, 6), (i, i, i)).save(tmp_path / f"{i:05d}.jpg")
    v = open_video(tmp_path)
    assert [round(float(f.array.mean())) for f in v.frames()] == [1, 2, 10]  # integer order, not lexical
    lst = open_video([np.zeros((6, 8, 3), np.uint8), Image.new("RGB", (8, 6)), str(tmp_path / "00001.jpg")])
    assert len(list(lst.frames())) == 3


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoError, match="garbage.mp4"):
        open_video(bad)
    good = _write_clip(tmp_path / "clip.mp4")
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # mp4 index (moov) is written last: the file cannot be opened
    with pytest.raises(VideoError, match="cut.mp4"):
        list(open_video(cut).frames())
    with pytest.raises(VideoError, match="not found"):
        open_video(tmp_path / "missing.mp4")


def test_truncated_stream_keeps_decoded_frames(tmp_path):
    # Matroska can be decoded up to the cut: the frames before it are returned, no crash.
    path = tmp_path / "clip.mkv"
    _write_clip(path, n=48)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    frames = list(open_video(cut).frames())
    assert 0 < len(frames) < 48


def test_unreachable_stream_url_fails_fast():
    with pytest.raises(VideoError, match="cannot open stream rtsp://127.0.0.1:9/live"):
        open_video("rtsp://127.0.0.1:9/live", timeout=5)


def test_sampling_validation():
    with pytest.raises(ValueError, match="stride"):
        Sampling(stride=0)
    with pytest.raises(ValueError, match="one of"):
        Sampling(stride=2, count=3)
