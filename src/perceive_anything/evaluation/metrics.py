"""Scores of the paper's tables: Osprey's semantic similarity / semantic IoU, the coco-caption metrics, OCR accuracy.

Every function takes plain strings and returns plain floats, so the same code scores a fresh run, a cached
run or someone else's predictions. Definitions (and where each comes from) are in ``docs/evaluation.md``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Mapping, Sequence

__all__ = [
    "osprey_prediction_text",
    "osprey_category_text",
    "semantic_iou",
    "semantic_scores",
    "caption_scores",
    "ocr_normalize",
    "ocr_accuracy",
    "CAPTION_METRICS",
]

CAPTION_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


# ----------------------------------------------------------------------------- recognition (Osprey protocol)
def osprey_prediction_text(text: str) -> str:
    """A generated label as Osprey's LVIS/PACO evaluation cleans it before scoring.

    Osprey keeps only what follows the first colon (models answer "Category: dog"), then turns full
    stops, colons and commas into spaces. Case is kept here: the similarity embeds the text as is and
    :func:`semantic_iou` lower-cases on its own.
    """
    text = text.strip()
    if ":" in text:
        text = text.split(":")[1]
    for ch in ".:,":
        text = text.replace(ch, " ")
    return text


def osprey_category_text(name: str) -> str:
    """A ground-truth LVIS/PACO category name as Osprey compares it: ``_`` and ``:`` become spaces
    (``bottle:cap`` -> ``bottle cap``, ``baseball_bat`` -> ``baseball bat``)."""
    return name.replace("_", " ").replace(":", " ")


def semantic_iou(prediction: str, category: str) -> float:
    """Word-set IoU of the lower-cased, whitespace-split texts (both already cleaned).

    Osprey divides by the union unconditionally; an empty prediction against an empty category (a
    union of nothing) scores 0 here instead of raising.
    """
    a, b = set(prediction.lower().split()), set(category.lower().split())
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def semantic_scores(predictions: Sequence[str], categories: Sequence[str], embedder) -> dict[str, float]:
    """Mean semantic similarity and semantic IoU (both x100) over regions, Osprey's LVIS/PACO protocol.

    ``predictions`` are raw generated labels and ``categories`` raw dataset names; both are cleaned
    here. Similarity is the cosine of the sentence embeddings (``embedder.encode``, L2-normalised
    all-MiniLM-L6-v2 vectors) of the cleaned prediction and the cleaned category, without lower-casing.
    """
    if len(predictions) != len(categories):
        raise ValueError(f"{len(predictions)} predictions but {len(categories)} categories")
    if not predictions:
        raise ValueError("no predictions to score")
    preds = [osprey_prediction_text(p) for p in predictions]
    cats = [osprey_category_text(c) for c in categories]
    emb_p = embedder.encode(preds)
    emb_c = embedder.encode(cats)
    sims = (emb_p * emb_c).sum(-1).tolist()
    ious = [semantic_iou(p, c) for p, c in zip(preds, cats)]
    n = len(preds)
    return {"semantic_similarity": 100.0 * sum(sims) / n, "semantic_iou": 100.0 * sum(ious) / n}


# ----------------------------------------------------------------------------- captions (coco-caption)
def caption_scores(
    references: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    metrics: Sequence[str] = CAPTION_METRICS,
    *,
    tokenize: bool = True,
) -> dict[str, float]:
    """Corpus-level BLEU-4, METEOR, ROUGE-L, CIDEr (x100) with pycocoevalcap, as the caption tables report them.

    ``references`` maps an item id to its reference captions, ``predictions`` the same ids to one
    generated caption. ``tokenize=True`` runs the Stanford PTB tokenizer (lower-cases, splits
    punctuation) like coco-caption's ``COCOEvalCap``; ``tokenize=False`` passes the strings raw, which
    is what the official PAM streaming evaluation does. METEOR and the tokenizer need Java.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImportError("caption metrics need pycocoevalcap: pip install 'perceive-anything[evaluation]'") from err
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; choose from {', '.join(CAPTION_METRICS)}")
    missing = sorted(set(references) ^ set(predictions))
    if missing:
        raise ValueError(f"references and predictions differ in ids, e.g. {missing[:3]}")
    if not predictions:
        raise ValueError("no predictions to score")
    ids = sorted(predictions)
    if any(not references[i] for i in ids):
        raise ValueError("every item needs at least one reference caption")
    gts = {i: [str(r) for r in references[i]] for i in ids}
    res = {i: [str(predictions[i])] for i in ids}
    if tokenize:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        gts = tok.tokenize({i: [{"caption": c} for c in v] for i, v in gts.items()})
        res = tok.tokenize({i: [{"caption": c} for c in v] for i, v in res.items()})
    # METEOR's Java wrapper chokes on an empty hypothesis line; a blank caption scores as one space would.
    res = {i: [c if c.strip() else "." for c in v] for i, v in res.items()}
    out: dict[str, float] = {}
    for name in metrics:
        if name == "BLEU-4":
            score, _ = Bleu(4).compute_score(gts, res, verbose=0)
            out[name] = 100.0 * float(score[3])
        elif name == "METEOR":
            score, _ = _meteor(Meteor).compute_score(gts, res)
            out[name] = 100.0 * float(score)
        elif name == "ROUGE-L":
            score, _ = Rouge().compute_score(gts, res)
            out[name] = 100.0 * float(score)
        else:
            score, _ = Cider().compute_score(gts, res)
            out[name] = 100.0 * float(score)
    return out


_METEOR: list = []


def _meteor(factory):
    """One METEOR Java process per Python process: starting it loads the paraphrase tables (tens of
    seconds on a small machine), so it is started on first use and stopped at exit."""
    if not _METEOR:
        import atexit

        _METEOR.append(factory())
        atexit.register(_close_meteor, _METEOR[0])
    return _METEOR[0]


def _close_meteor(scorer) -> None:
    proc = scorer.meteor_p
    with scorer.lock:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.kill()
        proc.wait()  # the wrapper's own __del__ repeats these steps harmlessly


# ----------------------------------------------------------------------------- OCR
_NON_WORD = re.compile(r"[^0-9a-z]+")


def ocr_normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a transcription: NFKD, ASCII letters and
    digits only, lower case (``"Café!"`` -> ``"cafe"``)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _NON_WORD.sub("", text.lower())


def ocr_accuracy(predictions: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """Word recognition accuracy (x100) of region transcriptions.

    ``accuracy``: the prediction equals the ground truth ignoring case and surrounding spaces -- the
    protocol of SPHINX-V's regional OCR evaluation (same first author as PAM), which PAM's COCO-Text
    number most likely follows. Two looser variants are reported beside it: ``accuracy_normalized``
    compares :func:`ocr_normalize` forms (punctuation and accents ignored) and ``accuracy_contains``
    accepts a normalised prediction that contains the word (answers such as ``The text reads "STOP".``).
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions but {len(truths)} ground-truth words")
    if not predictions:
        raise ValueError("no predictions to score")
    exact = normalized = contains = 0
    for p, t in zip(predictions, truths):
        np_, nt = ocr_normalize(p), ocr_normalize(t)
        if not nt:
            raise ValueError(f"ground-truth word {t!r} has no letter or digit; drop illegible regions first")
        exact += p.strip().lower() == t.strip().lower()
        normalized += np_ == nt
        contains += nt in np_
    n = len(predictions)
    return {"accuracy": 100.0 * exact / n, "accuracy_normalized": 100.0 * normalized / n,
            "accuracy_contains": 100.0 * contains / n}
