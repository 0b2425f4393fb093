"""Region-level video captioning: VideoRefer-Bench-D (LLM judge, four dimensions) and HC-STVG (METEOR/CIDEr).

Both give one mask on one frame of a clip (``frame_idx``, a source frame index). The clip is sampled to
``NUM_FRAMES`` frames evenly (the official notebooks' 32), with the annotated frame swapped in for the
nearest sampled one so that the mask prompts the frame it was drawn on; PAM tracks the object forward
and backward from there and writes ``video_caption``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from .base import Benchmark, DataError, Item, ScoreContext, check_media, coco_polygons_to_rle, find_file, read_json, \
    reference_caption_scores, region_prompt, require_keys

NUM_FRAMES = 32


def spread_including(total: int, frame_idx: int, num_frames: int = NUM_FRAMES) -> list[int]:
    """``num_frames`` indices spread evenly over ``total`` frames (the official linspace rule), with
    ``frame_idx`` swapped in for the nearest one so that the prompt's frame is among them."""
    from ...processing.video import linspace_indices

    if not 0 <= frame_idx < total:
        raise DataError(f"annotated frame {frame_idx} is outside the clip's {total} frames")
    kept = linspace_indices(total, num_frames)
    if frame_idx not in kept:
        nearest = min(range(len(kept)), key=lambda k: abs(kept[k] - frame_idx))
        kept[nearest] = frame_idx
    return sorted(set(kept))


def sample_with_frame(path: str, frame_idx: int, num_frames: int = NUM_FRAMES):
    """(frames, position of ``frame_idx`` among them): ``num_frames`` evenly spread frames that include ``frame_idx``."""
    from ...processing.video import Sampling, open_video

    src = open_video(path)
    total = len(src.sampled_indices(Sampling()))
    try:
        kept = spread_including(total, frame_idx, num_frames)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    wanted = set(kept)
    frames = [f.image for f in src.frames() if f.index in wanted]
    return frames, kept.index(frame_idx)


class MaskedVideoCaptions(Benchmark):
    media = "video"
    task = "video_caption"
    annotation_names: tuple[str, ...] = ()
    video_dir = ""

    def record_region(self, rec: dict) -> tuple[int, Any]:
        raise NotImplementedError

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, self.annotation_names)
        data = read_json(self, ann)
        if not isinstance(data, list):
            raise DataError(f"{self.name}: {ann} should hold a list of records")
        items = []
        for n, rec in enumerate(data):
            require_keys(self, rec, ["video", "caption", "frame_idx"], f"{ann.name} entry {n}")
            frame_idx, seg = self.record_region(rec)
            if isinstance(seg, dict) and "size" in seg:
                h, w = seg["size"]
            else:
                raise DataError(f"{self.name}: {ann.name} entry {n}: the mask must be a COCO RLE with 'size'")
            items.append(Item(id=str(rec.get("id", n)),
                              inputs={"video": str(root / self.video_dir / rec["video"]), "frame_idx": frame_idx,
                                      "mask_rle": coco_polygons_to_rle(seg, h, w)},
                              reference=str(rec["caption"])))
        check_media(self, [Path(it.inputs["video"]) for it in items], "video")
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        outputs = []
        for it in items:
            frames, pos = sample_with_frame(it.inputs["video"], it.inputs["frame_idx"])
            video = pam.perceive_video(frames, [region_prompt(it.inputs)], frame=pos, task=self.task, **generation)
            outputs.append(video[0].outputs[0].text)
        return outputs


# Our wording of the VideoRefer-Bench-D judging instructions: the four dimensions as the benchmark's README
# defines them, each scored 0-5 against the reference description (docs/evaluation.md).
VIDEOREFER_D_PROMPT = """You evaluate a description of one object in a video against a reference description \
written by a person who watched the video. Score the predicted description on four dimensions, each an integer \
from 0 (worst) to 5 (best):
- Subject Correspondence (SC): does the described subject correspond to the subject of the reference?
- Appearance Description (AD): are colour, shape, texture and other visual attributes described accurately?
- Temporal Description (TD): is the object's motion over time consistent with the reference?
- Hallucination Detection (HD): is the prediction free of facts, actions or elements that are not in the \
reference (5 = nothing invented)?

Reference description: {reference}
Predicted description: {prediction}

Answer with one JSON object and nothing else: {{"SC": <0-5>, "AD": <0-5>, "TD": <0-5>, "HD": <0-5>}}"""

DIMENSIONS = ("SC", "AD", "TD", "HD")


def parse_dimensions(answer: str) -> dict[str, float] | None:
    """The four 0-5 scores of a judge answer, or None when any is missing or out of range."""
    out = {}
    for dim in DIMENSIONS:
        m = re.search(rf'"?{dim}"?\s*[:=]\s*(\d+(?:\.\d+)?)', answer)
        if not m or not 0 <= float(m.group(1)) <= 5:
            return None
        out[dim] = float(m.group(1))
    return out


class VideoReferD(MaskedVideoCaptions):
    name = "videorefer-d"
    title = "VideoRefer-Bench-D: detailed region captions of videos (LLM judge)"
    metrics = ("SC", "AD", "TD", "HD", "average")
    judge_metrics = metrics
    annotation_names = ("VideoRefer-Bench-D.json",)
    video_dir = "Panda-70M-part"
    paper_table = "video region captioning table (number not checked)"
    source = "huggingface.co/datasets/DAMO-NLP-SG/VideoRefer-Bench (VideoRefer-Bench-D.json + the Panda-70M clips)"
    layout = """DIR/
  VideoRefer-Bench-D.json   list of {"id", "video": "<clip>.mp4", "caption", "frame_idx": "<n>",
                            "annotation": [{"<n>": {"segmentation": RLE}}]}
  Panda-70M-part/<clip>.mp4 the benchmark's video clips"""

    def record_region(self, rec: dict):
        key = str(rec["frame_idx"])
        try:
            seg = rec["annotation"][0][key]["segmentation"]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{self.name}: record {rec.get('id')} has no mask for its frame_idx {key}") from None
        return int(key), seg

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = {"items": len(items)}
        if ctx.judge is None:
            return scores
        per_dim: dict[str, list[float]] = {d: [] for d in DIMENSIONS}
        unparsed = 0
        for it, out in zip(items, outputs):
            parsed = parse_dimensions(ctx.judge.ask(VIDEOREFER_D_PROMPT.format(reference=it.reference, prediction=out)))
            if parsed is None:
                unparsed += 1  # left out of the means, counted here
                continue
            for d in DIMENSIONS:
                per_dim[d].append(parsed[d])
        if any(per_dim.values()):
            for d in DIMENSIONS:
                scores[d] = sum(per_dim[d]) / len(per_dim[d])
            scores["average"] = sum(scores[d] for d in DIMENSIONS) / len(DIMENSIONS)
        scores["unparsed_answers"] = unparsed
        return scores


class HCSTVG(MaskedVideoCaptions):
    name = "hc-stvg"
    title = "HC-STVG video region captioning"
    metrics = ("METEOR", "CIDEr")
    annotation_names = ("hc_stvg_val.json",)
    video_dir = "video_parts"
    paper_table = "video region captioning table (number not checked)"
    source = ("hc_stvg_val.json (huggingface.co/datasets/CircleRadon/referring_evaluation: one SAM mask per "
              "clip on frame_idx) + the HC-STVG video clips")
    layout = """DIR/
  hc_stvg_val.json          list of {"video": "<clip>.mp4", "frame_idx": <n>, "mask": RLE, "caption"}
  video_parts/<clip>.mp4    the HC-STVG clips"""

    def record_region(self, rec: dict):
        require_keys(self, rec, ["mask"], f"record {rec.get('video')}")
        return int(rec["frame_idx"]), rec["mask"]

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        return reference_caption_scores(items, outputs, self.metrics)


__all__ = ["VideoReferD", "HCSTVG", "VIDEOREFER_D_PROMPT", "parse_dimensions", "sample_with_frame"]
