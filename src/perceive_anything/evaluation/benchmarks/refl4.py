"""Ref-L4 region captioning with the DAM / PixelRefer protocol (Objects365 subset, condensed captions).

Detailed captions do not fit short-caption metrics, so both sides are condensed to a brief phrase
(category + key attributes) by an LLM before scoring: the references once (the processed refl4_gt.json),
PAM's captions by the judge model at scoring time when they are longer than five words. Then ROUGE-L,
METEOR and CIDEr with PTB tokenization (COCOEvalCap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..metrics import caption_scores
from .base import Benchmark, DataError, Item, ScoreContext, check_media, find_file, generate_image_regions, \
    read_json, require_keys

# Our wording of the condensing instruction (docs/evaluation.md).
CONDENSE_PROMPT = """Condense the following description of an object into one brief phrase that names the \
object's category and its key characteristics, and output only the phrase.
Example input: A freestanding top-loading washing machine with a white exterior, a recessed handle on top and \
a control panel with buttons on the upper right.
Example output: a white washing machine

Description: {text}"""

MAX_WORDS = 5  # captions up to this many words are scored as generated


class RefL4(Benchmark):
    name = "ref-l4"
    title = "Ref-L4 region captioning (Objects365 subset, condensed captions)"
    media = "image"
    task = "brief_caption"
    metrics = ("ROUGE-L", "METEOR", "CIDEr")
    judge_metrics = ()  # scored without a judge too, but then the captions are not condensed (recorded)
    paper_table = "region captioning table (Ref-L4) (number not checked)"
    source = ("Ref-L4 (huggingface.co/datasets/JierunChen/Ref-L4) images; ref-l4-val.json and the GPT-4o-condensed "
              "references refl4_gt.json from huggingface.co/datasets/CircleRadon/referring_evaluation")
    layout = """DIR/
  ref-l4-val.json    JSON lines {"file_name", "height", "width", "caption", "bbox": [x, y, w, h]}; only the
                     Objects365 images ("objects365" in file_name) are evaluated
  refl4_gt.json      optional, COCO-caption style {"annotations": [{"image_id": "<k>", "caption"}]}: the condensed
                     reference of the k-th evaluated region (without it the raw captions are the references)
  images/<file_name> the Ref-L4 images"""

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, ("ref-l4-val.json",))
        records = read_json(self, ann)
        records = [records] if isinstance(records, dict) else records
        condensed = {}
        if (root / "refl4_gt.json").is_file():
            gt = read_json(self, root / "refl4_gt.json")
            condensed = {str(a["image_id"]): a["caption"] for a in gt.get("annotations", [])}
        base = root / "images" if (root / "images").is_dir() else root
        items = []
        for rec in records:
            require_keys(self, rec, ["file_name", "caption", "bbox"], ann.name)
            if "objects365" not in rec["file_name"]:
                continue
            k = str(len(items))
            x, y, w, h = (float(v) for v in rec["bbox"])
            items.append(Item(id=k, inputs={"image": str(base / rec["file_name"]), "box": [x, y, x + w, y + h]},
                              reference=[condensed.get(k, rec["caption"])]))
        if condensed and len(condensed) != len(items):
            raise DataError(f"{self.name}: refl4_gt.json has {len(condensed)} references for {len(items)} regions")
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, self.task, generation)

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        preds = {}
        for it, out in zip(items, outputs):
            text = str(out)
            if ctx.judge is not None and len(text.split(" ")) > MAX_WORDS:
                text = ctx.judge.ask(CONDENSE_PROMPT.format(text=text)).strip()
            preds[it.id] = " ".join(text.split(" ")[:100])
        scores: dict[str, Any] = caption_scores({it.id: it.reference for it in items}, preds, self.metrics, tokenize=True)
        scores["regions"] = len(items)
        scores["condensed_by_judge"] = ctx.judge is not None
        return scores
