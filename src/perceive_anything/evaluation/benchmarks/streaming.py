"""Region-level streaming captions on ActivityNet clips: the PAM authors' streaming set (paper: METEOR,
CIDEr and the LLM-judged G-STDC continuity score)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ..metrics import caption_scores
from .base import Benchmark, DataError, Item, ScoreContext, check_media, find_file, read_json, require_keys

ANNOTATION_NAMES = ("streaming_eval_input_full.jsonl", "input_full.jsonl")

# The judge prompt of G-STDC. The official eval/eval.py asks the judge to rate, on 0-5, how well the
# predicted event captions keep continuity with the ground truth along five aspects and to answer
# "Continuity Score: <n>" + "Explanation: ..."; this wording is ours, the structure, the aspects, the
# scale and the answer format are the official ones (docs/evaluation.md).
GSTDC_PROMPT = """You judge region-level streaming video captions. A video was cut into consecutive segments; \
for each segment a reference caption describes what the tracked subject does, and a model wrote its own caption \
for the same segment after seeing the previous ones.

Rate from 0 to 5 (5 = perfect) how well the model's sequence of captions keeps the continuity of the reference \
sequence, considering:
1. temporal continuity: events follow each other naturally in time;
2. action continuity: the actions connect and progress from segment to segment;
3. subject consistency: the subject keeps its identity and state;
4. context preservation: the setting and context are kept;
5. logical flow: the sequence makes sense as a whole.

Reference segments:
{reference}

Model segments:
{prediction}

Answer exactly in this format:
Continuity Score: <number from 0 to 5>
Explanation: <your reasons>"""

_SCORE = re.compile(r"Continuity Score:\s*(\d+(?:\.\d+)?)")


def gstdc_prompt(references: Sequence[str], predictions: Sequence[str]) -> str:
    def lines(texts):
        return "\n".join(f"Segment {k}: {t}" for k, t in enumerate(texts, 1))

    return GSTDC_PROMPT.format(reference=lines(references), prediction=lines(predictions))


def parse_continuity(answer: str) -> float | None:
    """The 0-5 score of a judge answer, or None when it has none in range (scored 0, as officially)."""
    m = _SCORE.search(answer)
    if not m:
        return None
    value = float(m.group(1))
    return value if 0.0 <= value <= 5.0 else None


class StreamingActivityNet(Benchmark):
    name = "streaming-activitynet"
    title = "Region-level streaming video captioning (ActivityNet, PAM streaming set)"
    media = "stream"
    task = "stream_caption"
    metrics = ("METEOR", "CIDEr", "G-STDC")
    judge_metrics = ("G-STDC",)
    paper_table = "the streaming region captioning table (number not checked)"
    source = ("annotations: eval/example_data/input_full.jsonl of github.com/Perceive-Anything/PAM "
              "(334 videos, 945 events); frames: the OneDrive/Google-Drive zip linked from its eval/README.md")
    layout = """DIR/
  streaming_eval_input_full.jsonl   (or input_full.jsonl) one video per line:
      {"type": "video", "image_root": ".../V_<id>", "annotations": [
          {"event_id": 1, "frames": ["00000.jpg", ...], "gt": "caption", "box": [[x, y, w, h]]}, ...]}
  frames/V_<id>/00000.jpg ...       the unzipped frames; a video's folder is the last part of its image_root
                                    (an image_root that exists as written is used as is)"""

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, ANNOTATION_NAMES)
        items, paths = [], []
        for n, rec in enumerate(read_json(self, ann), 1):
            require_keys(self, rec, ["image_root", "annotations"], f"{ann.name} line {n}")
            written = Path(rec["image_root"])
            folder = written if written.is_dir() else root / "frames" / written.name
            events = []
            for ev in rec["annotations"]:
                require_keys(self, ev, ["frames", "gt", "box"], f"{ann.name} line {n} event {ev.get('event_id')}")
                if not ev["frames"]:
                    raise DataError(f"{self.name}: {ann.name} line {n}: event {ev.get('event_id')} has no frames")
                box = ev["box"][0] if ev["box"] and isinstance(ev["box"][0], (list, tuple)) else ev["box"]
                x, y, w, h = (float(v) for v in box)
                events.append({"event_id": ev.get("event_id"), "frames": list(ev["frames"]),
                               "box": [x, y, x + w, y + h]})  # the file's boxes are xywh
                paths.extend(folder / f for f in ev["frames"][:1])
            items.append(Item(id=written.name, inputs={"frames_dir": str(folder), "events": events},
                              reference=[str(ev["gt"]) for ev in rec["annotations"]]))
        check_media(self, paths, "frame")
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        from PIL import Image

        outputs = []
        for it in items:
            folder = Path(it.inputs["frames_dir"])
            history, preds = None, []
            for ev in it.inputs["events"]:
                frames = [folder / f for f in ev["frames"]]
                with Image.open(frames[0]) as im:
                    w, h = im.size
                x1, y1, x2, y2 = ev["box"]
                # Annotated boxes overshoot the frame by a fraction of a pixel in places; clip them.
                box = [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
                video = pam.perceive_video([str(f) for f in frames], [box], task="stream_caption",
                                           history=history, **generation)
                text = video[0].outputs[0].text
                preds.append(text)
                history = text  # the stream is captioned with its own previous caption as context
            outputs.append(preds)
        return outputs

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        refs, preds = {}, {}
        for it, out in zip(items, outputs):
            for k, (gt, pred) in enumerate(zip(it.reference, out)):
                key = f"{len(refs):06d}"  # one entry per event, like the official running index
                refs[key], preds[key] = [gt], pred
        # The official scorer passes the strings raw (no PTB tokenizer, no lower-casing).
        scores: dict[str, Any] = caption_scores(refs, preds, ("METEOR", "CIDEr"), tokenize=False)
        scores["events"] = len(preds)
        if ctx.judge is not None:
            per_video, unparsed = {}, 0
            for it, out in zip(items, outputs):
                value = parse_continuity(ctx.judge.ask(gstdc_prompt(it.reference, out)))
                unparsed += value is None
                per_video[it.id] = 0.0 if value is None else value
            scores["G-STDC"] = sum(per_video.values()) / len(per_video)
            scores["G-STDC_unparsed_answers"] = unparsed
            scores["G-STDC_per_video"] = per_video
        return scores
