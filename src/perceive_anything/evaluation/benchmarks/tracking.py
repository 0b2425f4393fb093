"""Video referring-expression generation on tracking data: Elysium (ElysiumTrack-val500) and BenSMOT.

Both give an object's box on every frame of a clip of JPEG frames; PAM is prompted with the box on the
object's first annotated frame, sees up to ``NUM_FRAMES`` frames spread over the clip (the prompt frame
among them) and writes ``video_caption``, scored against the reference with METEOR and CIDEr (PTB
tokenization).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .base import Benchmark, DataError, Item, ScoreContext, check_media, find_file, read_json, reference_caption_scores
from .video import NUM_FRAMES, spread_including


class FrameClipCaptions(Benchmark):
    media = "video"
    task = "video_caption"
    metrics = ("METEOR", "CIDEr")
    paper_table = "video region captioning table (number not checked)"

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        outputs = []
        for it in items:
            frames, start = it.inputs["frames"], it.inputs["prompt_frame"]
            kept = spread_including(len(frames), start, NUM_FRAMES)
            video = pam.perceive_video([frames[k] for k in kept], [{"box": it.inputs["box"]}],
                                       frame=kept.index(start), task=self.task, **generation)
            outputs.append(video[0].outputs[0].text)
        return outputs

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        return reference_caption_scores(items, outputs, self.metrics)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


class Elysium(FrameClipCaptions):
    name = "elysium"
    title = "Elysium video referring-expression generation (ElysiumTrack-val500)"
    source = "ElysiumTrack-val500 of ElysiumTrack-1M (github.com/Hon-Wong/Elysium): the JSON-lines file and its frames"
    layout = """DIR/
  ElysiumTrack-val500.json   JSON lines {"vid", "caption", "frames": ["<relative path>", ...],
                             "box": [[x1, y1, x2, y2], ...]}  (one box per frame; fractions of the frame
                             size when every value is <= 1, else pixels)
  <frames paths>             the frames, relative to DIR"""

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, ("ElysiumTrack-val500.json",))
        records = read_json(self, ann)
        items = []
        for n, rec in enumerate([records] if isinstance(records, dict) else records):
            for key in ("caption", "frames", "box"):
                if key not in rec:
                    raise DataError(f"{self.name}: {ann.name} record {n + 1} lacks {key!r}")
            if len(rec["frames"]) != len(rec["box"]) or not rec["frames"]:
                raise DataError(f"{self.name}: {ann.name} record {n + 1}: {len(rec['frames'])} frames but "
                                f"{len(rec['box'])} boxes")
            frames = [str(root / f) for f in rec["frames"]]
            check_media(self, [Path(frames[0])], "frame")
            box = [float(v) for v in rec["box"][0]]
            if max(box) <= 1.0:
                w, h = _image_size(Path(frames[0]))
                box = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
            items.append(Item(id=str(rec.get("vid", n)), inputs={"frames": frames, "prompt_frame": 0, "box": box},
                              reference=str(rec["caption"])))
        check_media(self, [Path(f) for it in items for f in it.inputs["frames"]], "frame")
        return items


def read_mot(path: Path) -> dict[int, list[tuple[int, list[float]]]]:
    """MOTChallenge gt.txt -> {track id: [(frame number, [x, y, w, h]), ...]} (rows with a 0 'consider' flag dropped)."""
    tracks: dict[int, list[tuple[int, list[float]]]] = {}
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6:
            continue
        if len(parts) > 6 and parts[6] in ("0", "0.0"):
            continue
        frame, tid = int(float(parts[0])), int(float(parts[1]))
        tracks.setdefault(tid, []).append((frame, [float(v) for v in parts[2:6]]))
    return {t: sorted(v) for t, v in tracks.items()}


class BenSMOT(FrameClipCaptions):
    name = "bensmot"
    title = "BenSMOT instance captions of tracked people (semantic multi-object tracking)"
    source = "BenSMOT test split (github.com/Nathan-Li123/SMOTer, ECCV 2024 'Beyond MOT')"
    layout = """DIR/  (the test split)
  <activity>/<sequence>/gt/gt.txt               MOTChallenge rows: frame, id, x, y, w, h, consider, class, visibility
  <activity>/<sequence>/imgs/001.jpg ...        the frames (frame k = the k-th file in name order)
  <activity>/<sequence>/instance_captions.txt   one "name: caption" line per track, in increasing track id order"""

    def load(self, root: Path) -> list[Item]:
        if not root.is_dir():
            raise self.missing(f"data folder {root} does not exist")
        seqs = sorted(p.parent.parent for p in root.glob("*/*/gt/gt.txt"))
        if not seqs:
            raise self.missing(f"no <activity>/<sequence>/gt/gt.txt under {root}")
        items = []
        for seq in seqs:
            caps_file = seq / "instance_captions.txt"
            if not caps_file.is_file():
                raise self.missing(f"{caps_file} is absent")
            frames = sorted(str(p) for p in (seq / "imgs").glob("*.jpg"))
            if not frames:
                raise self.missing(f"no frames in {seq / 'imgs'}")
            captions = [ln.partition(":")[2].strip() for ln in caps_file.read_text(encoding="utf-8").splitlines()
                        if ":" in ln]
            tracks = read_mot(seq / "gt" / "gt.txt")
            # captions follow the track ids in increasing order; tracks without a caption are not evaluated
            for tid, caption in zip(sorted(tracks), captions):
                first_frame, (x, y, w, h) = tracks[tid][0]
                if not 1 <= first_frame <= len(frames):
                    raise DataError(f"{self.name}: {seq.name} track {tid} starts on frame {first_frame} "
                                    f"but there are {len(frames)} frames")
                items.append(Item(id=f"{seq.parent.name}/{seq.name}:{tid}",
                                  inputs={"frames": frames, "prompt_frame": first_frame - 1,
                                          "box": [x, y, x + w, y + h]},
                                  reference=caption))
        return items
