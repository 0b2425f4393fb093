"""DLC-Bench (Describe Anything): detailed region captions scored by multiple-choice questions.

A text-only judge reads PAM's description of a region and answers, from the description alone, a
recognition question ("is the object a <class> or something similar?") and the benchmark's positive
(details that should be mentioned) and negative (details that must not be claimed) questions. Each
chosen option carries the benchmark's score; when the recognition answer is "no", every score is capped
at 0. A region's positive (negative) score is the mean over its positive (negative) questions; the
benchmark reports the mean positive score, the mean negative score over regions that have negatives, and
their average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .base import Benchmark, DataError, Item, ScoreContext, check_media, coco_polygons_to_rle, find_file, \
    generate_image_regions, read_json
from .recognition import images_root

# Our wording of DLC-Bench's question prompt (docs/evaluation.md).
DLC_PROMPT = """Below is a description of one object in an image. Answer the multiple-choice question using only \
the description. Rules: output exactly one of the choices and nothing else (no reasoning, no corrections, do not \
repeat the question); the description does not need to match a choice word for word, pick the closest one.

Description:
{description}

Question:
{question}"""

LETTERS = "ABCDE"


def recognition_question(class_name: str) -> dict[str, Any]:
    """The question DLC-Bench puts first: is the described object of the annotated class?"""
    name = class_name.strip()
    plural = name.endswith("s") and not name.endswith(("ss", "us", "is")) and name != "bus"
    if plural:
        text = (f"Is it likely that the objects in the description are {name} or objects of a similar type? "
                "It does not have to be an exact match.")
    else:
        article = "an" if name[:1].lower() in "aeiou" else "a"
        text = (f"Is it likely that the object in the description is {article} {name} or an object of a similar "
                "type? It does not have to be an exact match.")
    return {"question": text, "choices": [["Yes", "correct"], ["No", "incorrect"]], "type": "recognition"}


def question_block(q: dict[str, Any]) -> str:
    return q["question"] + "\n" + "\n".join(f"{LETTERS[i]}. {c[0]}" for i, c in enumerate(q["choices"]))


def parse_choice(answer: str, choices: Sequence[str]) -> int | None:
    """Index of the option a free-text answer picks, or None (no option recognised: scored 0).

    Order of preference: the whole answer is an option, "B. option" or the letter alone; exactly one
    option occurs in the answer; the answer starts with "B."; several options occur (the one starting
    last wins, the longest on a tie); the answer is part of exactly one or several options (longest)."""
    pred = answer.strip().lower()
    if not pred:
        return None
    opts = [c.strip().lower() for c in choices]
    letters = LETTERS[: len(opts)].lower()
    for i, c in enumerate(opts):
        if pred in (c, f"{letters[i]}. {c}", letters[i]):
            return i
    found = [(i, pred.index(c), len(c)) for i, c in enumerate(opts) if c in pred]
    if len(found) == 1:
        return found[0][0]
    if len(pred) > 1 and pred[0] in letters and pred[1] == ".":
        return letters.index(pred[0])
    if found:
        last = max(pos for _, pos, _ in found)
        return max((f for f in found if f[1] == last), key=lambda f: f[2])[0]
    inside = [(i, len(c)) for i, c in enumerate(opts) if pred in c]
    if inside:
        return max(inside, key=lambda t: t[1])[0]
    if pred[0] in letters and (len(pred) == 1 or pred[1] == "\n"):
        return letters.index(pred[0])
    return None


class DLCBench(Benchmark):
    name = "dlc-bench"
    title = "DLC-Bench detailed localized captions (LLM judge, multiple-choice questions)"
    media = "image"
    task = "detailed_caption"
    metrics = ("positive", "negative", "average")
    judge_metrics = metrics
    paper_table = "detailed region caption table (number not checked)"
    source = "huggingface.co/datasets/nvidia/DLC-Bench (annotations.json, qa.json, class_names.json, images)"
    layout = """DIR/
  annotations.json   COCO-style: "images": [{"id", "file_name", "height", "width"}],
                     "annotations": [{"id", "image_id", "segmentation"}]  (one region per annotation)
  qa.json            {"<annotation id>": [{"question", "choices": [[text, score], ...], "type": "positive"|"negative"}]}
  class_names.json   {"<annotation id>": "class name"}
  images/<file_name> the benchmark's images"""

    def load(self, root: Path) -> list[Item]:
        coco = read_json(self, find_file(self, root, ("annotations.json",)))
        qa = read_json(self, find_file(self, root, ("qa.json",)))
        names = read_json(self, find_file(self, root, ("class_names.json",)))
        if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
            raise DataError(f"{self.name}: annotations.json should be COCO-style with 'images' and 'annotations'")
        base = images_root(root)
        images = {img["id"]: img for img in coco["images"]}
        items = []
        for a in coco["annotations"]:
            key = str(a["id"])
            if key not in qa or key not in names:
                raise DataError(f"{self.name}: annotation {key} has no questions in qa.json or no class in class_names.json")
            img = images.get(a["image_id"])
            if img is None:
                raise DataError(f"{self.name}: annotation {key} refers to image {a['image_id']} that is not in 'images'")
            items.append(Item(id=key, inputs={"image": str(base / img["file_name"]),
                                              "mask_rle": coco_polygons_to_rle(a["segmentation"], img["height"], img["width"])},
                              reference={"class_name": names[key], "questions": qa[key]}))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, self.task, generation)

    def region_scores(self, judge, description: str, reference: dict) -> tuple[float, float | None, int]:
        """(positive score, negative score or None, answers no option matched) of one region."""
        questions = [recognition_question(reference["class_name"]), *reference["questions"]]
        recognised, pos, neg, unmatched = True, [], [], 0
        for q in questions:
            answer = judge.ask(DLC_PROMPT.format(description=description, question=question_block(q)))
            idx = parse_choice(answer, [c[0] for c in q["choices"]])
            unmatched += idx is None
            value = q["choices"][idx][1] if idx is not None else 0
            if q["type"] == "recognition":
                recognised = value == "correct"
                continue
            value = float(value) if recognised else min(0.0, float(value))
            (pos if q["type"] == "positive" else neg).append(value)
        if not pos:
            raise DataError(f"{self.name}: a region of class {reference['class_name']!r} has no positive question")
        return sum(pos) / len(pos), (sum(neg) / len(neg) if neg else None), unmatched

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = {"regions": len(items)}
        if ctx.judge is None:
            return scores
        pos, neg, unmatched = [], [], 0
        for it, out in zip(items, outputs):
            p, n, u = self.region_scores(ctx.judge, out, it.reference)
            pos.append(p)
            unmatched += u
            if n is not None:
                neg.append(n)
        scores["positive"] = 100.0 * sum(pos) / len(pos)
        scores["negative"] = 100.0 * sum(neg) / len(neg) if neg else None
        scores["average"] = (scores["positive"] + scores["negative"]) / 2 if neg else None
        scores["unmatched_answers"] = unmatched
        return scores
