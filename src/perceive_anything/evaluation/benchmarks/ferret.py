"""Ferret-Bench referring description and referring reasoning, judged against Ferret's GPT-4 answers.

Scoring follows Ferret's protocol: a judge sees the image context (Ferret's object / relation / region
lists and captions), the question, the reference answer ("Assistant 1") and PAM's answer ("Assistant 2"),
and gives each a 1-10 score on the first line of its reply; a category's score is
100 x mean(PAM's scores) / mean(reference scores).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from .base import Benchmark, DataError, Item, ScoreContext, check_media, find_file, generate_image_regions, \
    read_json, require_keys
from .recognition import images_root

CATEGORIES = {"refer_caption": "box_refer_caption.json", "refer_reason": "box_refer_reason.json"}

# Our wording; the inputs, the two-score first line and the 1-10 scale are Ferret's / MDVP-Bench's
# (docs/evaluation.md). ``{about}`` says what the judge knows of the image.
PAIRWISE_PROMPT = """[Context]
{context}

[Question]
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{prediction}
[End of Assistant 2]

[System]
{about} Rate the helpfulness, relevance, accuracy and level of detail of each answer with an overall score \
from 1 to 10 (higher is better). On the first line write only the two scores, Assistant 1's then Assistant 2's, \
separated by a space. Then explain your rating, without letting the order of the answers bias you."""

FERRET_ABOUT = ("Two AI assistants answered the question above about an image. You cannot see the image; the "
                "context describes it with object boxes (x1, y1, x2, y2 as fractions of the image size), "
                "relations, region descriptions and captions.")


_PAIR = re.compile(r"^\s*(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)\s*$")


def parse_pair(answer: str) -> tuple[float, float] | None:
    first = answer.strip().split("\n", 1)[0] if answer.strip() else ""
    m = _PAIR.match(first)
    return (float(m.group(1)), float(m.group(2))) if m else None


def question_text(text: str) -> str:
    """Osprey's questions mark the region with ``<region>``; PAM gets the region as its visual prompt, so
    the marker becomes plain words."""
    return text.replace("<region>", "the region").replace("  ", " ").strip()


class FerretBench(Benchmark):
    name = "ferret-bench"
    title = "Ferret-Bench referring description and reasoning (LLM judge)"
    media = "image"
    task = "question"
    metrics = ("refer_caption", "refer_reason")
    judge_metrics = metrics
    paper_table = "image region QA / reasoning table (number not checked)"
    source = ("questions with boxes: osprey/eval/ferret-bench/box_refer_{caption,reason}.json of "
              "github.com/CircleRadon/Osprey; reference answers and image context: "
              "ferret/eval/ferret_gpt4_data/refer_{caption,reason}/{answer,context}.jsonl of github.com/apple/ml-ferret; "
              "COCO val2017 images")
    layout = """DIR/
  box_refer_caption.json, box_refer_reason.json   Osprey's questions: [{"question_id", "image", "text" (with <region>),
                                                  "annotation": {"bbox": [x, y, w, h], ...}}]
  refer_caption/answer.jsonl, context.jsonl       Ferret's GPT-4 answers and image contexts, by question_id
  refer_reason/answer.jsonl, context.jsonl
  images/<image>                                  COCO val2017 images"""

    def load(self, root: Path) -> list[Item]:
        base = images_root(root)
        items = []
        for cat, qfile in CATEGORIES.items():
            questions = read_json(self, find_file(self, root, (qfile,)))
            answers = {r["question_id"]: r for r in read_json(self, find_file(self, root, (f"{cat}/answer.jsonl",)))}
            contexts = {r["question_id"]: r for r in read_json(self, find_file(self, root, (f"{cat}/context.jsonl",)))}
            for q in questions:
                require_keys(self, q, ["question_id", "image", "text", "annotation"], f"{qfile} question")
                qid = q["question_id"]
                if qid not in answers or qid not in contexts:
                    raise DataError(f"{self.name}: question {qid} of {qfile} has no reference answer or context "
                                    f"in {cat}/answer.jsonl / context.jsonl")
                x, y, w, h = (float(v) for v in q["annotation"]["bbox"])
                items.append(Item(id=f"{cat}:{qid}",
                                  inputs={"image": str(base / q["image"]), "box": [x, y, x + w, y + h],
                                          "question": question_text(q["text"])},
                                  reference={"answer": answers[qid]["text"], "context": contexts[qid]["text"],
                                             "question": q["text"], "category": cat}))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        # each question is its own prompt text, so each region is its own call
        return [generate_image_regions(pam, [it], "question", generation, question=it.inputs["question"])[0]
                for it in items]

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = {"items": len(items)}
        if ctx.judge is None:
            return scores
        pairs: dict[str, list[tuple[float, float]]] = {c: [] for c in CATEGORIES}
        unparsed = 0
        for it, out in zip(items, outputs):
            ref = it.reference
            pair = parse_pair(ctx.judge.ask(PAIRWISE_PROMPT.format(
                context=ref["context"], question=ref["question"], reference=ref["answer"], prediction=out,
                about=FERRET_ABOUT)))
            if pair is None:
                unparsed += 1
                continue
            pairs[ref["category"]].append(pair)
        for cat, lst in pairs.items():
            if lst and sum(p[0] for p in lst) > 0:
                scores[cat] = 100.0 * sum(p[1] for p in lst) / sum(p[0] for p in lst)
        everything = [p for lst in pairs.values() for p in lst]
        if everything and sum(p[0] for p in everything) > 0:
            scores["all"] = 100.0 * sum(p[1] for p in everything) / sum(p[0] for p in everything)
        scores["unparsed_answers"] = unparsed
        return scores
