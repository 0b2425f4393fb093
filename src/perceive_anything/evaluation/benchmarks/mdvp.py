"""MDVP-Bench (SPHINX-V): questions about marked regions of natural images, documents, screenshots and
multi-panel figures, judged against reference answers (relative score, as Ferret-Bench / LLaVA-Bench).

Each record marks one or more regions (boxes or points) and asks one question about them. PAM answers
region by region -- its ``detailed_caption`` for caption domains, the question (with the region marker
in words) otherwise -- and the answers are joined as ``<Region k>: ...`` lines, the format of the
reference answers. Inter-region relationship questions are answered the same way, one region at a time,
which PAM's single-region prompting cannot do better. The judge gets the image with the regions drawn on
it (for judges that see images) and a text context naming the image type.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from .base import Benchmark, DataError, Item, ScoreContext, check_media, read_json, require_keys
from .ferret import PAIRWISE_PROMPT, parse_pair

CONTEXTS = (
    ("natural", "The image is a natural image."),
    ("ocr", "The image contains text, and the user wants to know what the text says."),
    ("android", "The image is a screenshot of a mobile phone or a web page."),
    ("web", "The image is a screenshot of a mobile phone or a web page."),
    ("multipanel", "The image is a multi-panel figure."),
)

MDVP_ABOUT = ("Two AI assistants answered the question above about the attached image, on which the regions "
              "the question refers to are drawn and numbered ({prompt_kind}).")


def context_for(domain: str) -> str:
    for key, text in CONTEXTS:
        if domain.startswith(key):
            return text
    return "The image is a natural image."


def draw_regions(image_path: str, regions: list[dict[str, Any]]) -> bytes:
    """The image with each region drawn and numbered (PNG), what a vision judge is shown."""
    from PIL import Image, ImageDraw

    with Image.open(image_path) as im:
        img = im.convert("RGB")
    draw = ImageDraw.Draw(img)
    for k, r in enumerate(regions, 1):
        if "box" in r:
            x1, y1, x2, y2 = r["box"]
            draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=3)
            draw.text((x1 + 3, y1 + 3), str(k), fill=(255, 0, 0))
        else:
            x, y = r["points"][0]
            draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=(255, 0, 0), width=3)
            draw.text((x + 8, y - 8), str(k), fill=(255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class MDVPBench(Benchmark):
    name = "mdvp-bench"
    title = "MDVP-Bench: questions about marked regions (LLM judge, relative score)"
    media = "image"
    task = "detailed_caption"
    metrics = ("natural", "ocr", "screenshot", "multipanel", "all")
    judge_metrics = metrics
    paper_table = "image region QA table (MDVP-Bench) (number not checked)"
    source = "huggingface.co/datasets/Afeng-x/Draw-and-Understand, folder MDVP-bench (SPHINX-V, github.com/AFeng-x/Draw-and-Understand)"
    layout = """DIR/
  <domain>/<domain>_box.json and/or <domain>_point.json   for each domain folder of MDVP-bench
      (natural_QA, ocr_doc_detailed_caption, android_QA, web_QA, multipanel_Inter_Relationship, ...):
      list of {"image_name", "question_id", "question", "gt_answers",
               "bbox": [[x, y, w, h], ...]  or  "points": [[x, y], ...]}
  <domain>/<image_name>                                    the domain's images"""

    def load(self, root: Path) -> list[Item]:
        if not root.is_dir():
            raise self.missing(f"data folder {root} does not exist")
        files = sorted(root.glob("*/*_box.json")) + sorted(root.glob("*/*_point.json"))
        if not files:
            raise self.missing(f"no <domain>/<domain>_box.json or _point.json under {root}")
        items = []
        for path in files:
            domain = path.parent.name
            phase = path.stem
            for n, rec in enumerate(read_json(self, path)):
                require_keys(self, rec, ["image_name", "question", "gt_answers"], f"{path.name} entry {n}")
                if "bbox" in rec:
                    regions = [{"box": [float(x), float(y), float(x) + float(w), float(y) + float(h)]}
                               for x, y, w, h in rec["bbox"]]
                elif "points" in rec:
                    regions = [{"points": [[float(p[0]), float(p[1])]], "labels": [1]} for p in rec["points"]]
                else:
                    raise DataError(f"{self.name}: {path.name} entry {n} has neither 'bbox' nor 'points'")
                items.append(Item(id=f"{phase}:{rec.get('question_id', n)}",
                                  inputs={"image": str(path.parent / rec["image_name"]), "regions": regions,
                                          "question": str(rec["question"]), "caption": "caption" in domain},
                                  reference={"answer": str(rec["gt_answers"]), "domain": domain,
                                             "prompt_kind": "boxes" if "bbox" in rec else "points"}))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        outputs = []
        for it in items:
            if it.inputs["caption"]:
                res = pam.perceive(it.inputs["image"], it.inputs["regions"], task="detailed_caption", **generation)
                texts = [r.output("detailed_caption").text for r in res]
            else:
                question = it.inputs["question"].replace("<region>", "the region")
                res = pam.perceive(it.inputs["image"], it.inputs["regions"], task="question", question=question,
                                   **generation)
                texts = [r.output("question").text for r in res]
            outputs.append("\n".join(f"<Region {k}>: {t}" for k, t in enumerate(texts, 1)))
        return outputs

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = {"items": len(items)}
        if ctx.judge is None:
            return scores
        groups: dict[str, list[tuple[float, float]]] = {}
        unparsed = 0
        for it, out in zip(items, outputs):
            ref = it.reference
            prompt = PAIRWISE_PROMPT.format(context=context_for(ref["domain"]), question=it.inputs["question"],
                                            reference=ref["answer"], prediction=out,
                                            about=MDVP_ABOUT.format(prompt_kind=ref["prompt_kind"]))
            pair = parse_pair(ctx.judge.ask(prompt, image=draw_regions(it.inputs["image"], it.inputs["regions"])))
            if pair is None:
                unparsed += 1
                continue
            d = ref["domain"]
            group = "screenshot" if d.startswith(("android", "web")) else d.split("_")[0]
            for key in (group, "all", f"domain:{it.id.split(':')[0]}"):
                groups.setdefault(key, []).append(pair)
        for key, pairs in groups.items():
            ref_total = sum(p[0] for p in pairs)
            if ref_total > 0:
                scores[key] = 100.0 * sum(p[1] for p in pairs) / ref_total
        scores["unparsed_answers"] = unparsed
        return scores
