"""PAM's language training stages as a :class:`~perceive_anything.training.trainer.TrainingTask`.

Stage definitions (the released code has only the stage-2 script, reference §10.4; stages 1 and
1.5 follow the paper's description of a progressive schedule, their exact mixtures being unknown):

=======  ==========================================================  ==============================
stage    trainable                                                   default data
=======  ==========================================================  ==============================
``1``    Semantic Perceiver, both projectors, the three separator    image regions (label,
         vectors (``image_newline``, ``semT_newline``,               definition, brief / detailed
         ``frame_newline``); LLM and SAM 2 frozen                    caption; EN + ZH)
``1.5``  same as stage 1                                             videos (offline captions) and
                                                                     stream clips (caption with the
                                                                     previous clip's caption)
``2``    everything but SAM 2: perceiver, projectors, separators     all of the above
         and the whole LLM (the released ``mm_tunable_parts``);
         with ``lora=True`` LoRA adapters on the LLM's linear
         layers replace the full LLM (merged into the weights
         when the phase ends, so checkpoints stay plain)
=======  ==========================================================  ==============================

``frame_newline`` is part of stage 1 although images never use it, so that stages 1 and 1.5 train
the same set (AdamW leaves a parameter without gradient untouched).

Sequences (reference §10.2): system turn + user turn (``<image>`` -> the region's visual block) +
assistant answer, Qwen ChatML, right padding, the LM loss over the targets only.

Label masking — decision: **clean masking by default** (``official_label_masking=False``): the
targets are the answer tokens and the ``<|im_end|>`` that ends the answer, i.e. exactly what the
model generates at inference (the prompt ends with ``<|im_start|>assistant\\n`` and decoding stops
at ``<|im_end|>``). The official LLaVA-NeXT code also trains on the assistant header, the ``\\n``
after ``<|im_end|>`` and every ``\\n`` / ``<|im_start|>`` / ``<|im_end|>`` anywhere in the system
and user turns (§12.22); those tokens are fixed template text the model never has to produce, so
they only add easy targets that dilute the loss. ``official_label_masking=True`` reproduces the
official labels exactly, for parity retraining.

SAM 2 runs without gradient to produce the "mid" features, unless some segmenter parameter
requires grad (then the segmenter is being trained jointly and gradients flow through it).

Region-word alignment (``align_weight > 0``, shapes data only, off by default): on image rows, the
mean projected semantic token of the region is asked to be closer (cosine) to the LLM's input
embedding of the region's own shape word, and of its colour word, than to those of the other
shapes / colours (cross-entropy over the classes). It adds no parameters. Why: trained from scratch,
the LLM first learns its text prior, during which visual tokens are noise it learns to ignore; the
perceiver is then pushed to a constant (measured with ``benchmarks/grounding.py``: region-to-region
variation of the semantic tokens 0.24 -> 0.02 within 50 stage-1 steps). The alignment keeps the
semantic tokens region-specific and puts them where the LLM's word embeddings (tied to its output
layer) already are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..modeling.language import IMAGE_TOKEN_INDEX
from ..processing import text as text_proc
from .trainer import derive_seed

__all__ = [
    "STAGES",
    "IGNORE_INDEX",
    "LanguageTask",
    "ShapesData",
    "PamDataSource",
    "LanguageItem",
    "LanguageBatch",
    "build_training_sequence",
    "stage_parameters",
    "lm_loss",
    "image_mids",
    "video_mids",
]

IGNORE_INDEX = -100
STAGES = ("1", "1.5", "2")
IMAGE_TASKS = ("label", "definition", "brief_caption", "detailed_caption")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# =============================================================================================
# Sequence construction and labels
# =============================================================================================

def _special_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no {token!r} token (PAM needs Qwen's ChatML specials)")
    return int(tid)


def _newline_id(tokenizer) -> int | None:
    ids = tokenizer("\n", add_special_tokens=False).input_ids
    return int(ids[0]) if len(ids) == 1 else None


def build_training_sequence(
    tokenizer,
    turns: Sequence[tuple[str, str]],
    *,
    official_label_masking: bool = False,
    system: str = text_proc.DEFAULT_SYSTEM_PROMPT,
) -> tuple[list[int], list[int]]:
    """Token ids (with one ``-200`` for ``<image>``) and labels of a conversation.

    ``turns`` are ``(role, text)`` with role ``human``/``user`` or ``gpt``/``assistant``; the first
    human turn carries ``<image>``. Every message is tokenised on its own (as the official
    ``preprocess_qwen`` does), which gives the same ids as the inference prompt
    (:func:`~perceive_anything.processing.text.build_prompt` + ``tokenize_with_placeholder``) because
    messages are separated by special tokens.

    Labels: see the module docstring (clean by default, ``official_label_masking=True`` for the
    official LLaVA-NeXT labels).
    """
    im_start = _special_id(tokenizer, "<|im_start|>")
    im_end = _special_id(tokenizer, "<|im_end|>")
    nl = _newline_id(tokenizer)

    def tok(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False).input_ids)

    ids: list[int] = tok(f"<|im_start|>system\n{system}<|im_end|>\n")
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    for role, value in turns:
        role = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}.get(role)
        if role is None:
            raise ValueError(f"unknown conversation role in {turns!r}")
        if role == "user":
            piece = text_proc.tokenize_with_placeholder(tokenizer, f"<|im_start|>user\n{value}<|im_end|>\n")
            ids += piece
            labels += [IGNORE_INDEX] * len(piece)
        else:
            header = tok("<|im_start|>assistant\n")
            body = tok(value) + [im_end]
            tail = tok("\n")
            ids += header + body + tail
            if official_label_masking:
                labels += header + body + tail
            else:
                labels += [IGNORE_INDEX] * len(header) + body + [IGNORE_INDEX] * len(tail)
    if official_label_masking:
        # LLaVA-NeXT's preprocess_qwen un-masks these ids everywhere, system and user turns included
        unmask = {im_start, im_end} | ({nl} if nl is not None else set())
        labels = [i if (i in unmask and lab == IGNORE_INDEX) else lab for i, lab in zip(ids, labels)]
    if ids.count(IMAGE_TOKEN_INDEX) != 1:
        raise ValueError(f"a training conversation needs exactly one <image> placeholder, got {ids.count(IMAGE_TOKEN_INDEX)}")
    return ids, labels


def splice_right_padded(
    lang_model, rows: Sequence[tuple[list[int], list[int]]], blocks: Sequence[Tensor], max_length: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Expand every row's ``-200`` into its visual block; right-pad (training layout, §5.5).

    Returns ``inputs_embeds`` (B, L, H), ``attention_mask`` (B, L) and ``labels`` (B, L) with
    ``-100`` on visual positions and pads. Sequences longer than ``max_length`` are truncated.
    """
    embed = lang_model.llm.get_input_embeddings()
    device = embed.weight.device
    seqs, labs = [], []
    for (ids, lab), block in zip(rows, blocks):
        k = ids.index(IMAGE_TOKEN_INDEX)
        before = torch.tensor(ids[:k], dtype=torch.long, device=device)
        after = torch.tensor(ids[k + 1:], dtype=torch.long, device=device)
        text = embed(torch.cat([before, after]))
        e = torch.cat([text[:k], block.to(text.dtype), text[k:]], dim=0)
        lb = lab[:k] + [IGNORE_INDEX] * block.shape[0] + lab[k + 1:]
        if max_length is not None and e.shape[0] > max_length:
            e, lb = e[:max_length], lb[:max_length]
        seqs.append(e)
        labs.append(lb)
    length = max(s.shape[0] for s in seqs)
    h = seqs[0].shape[-1]
    b = len(seqs)
    inputs = seqs[0].new_zeros((b, length, h))
    mask = torch.zeros((b, length), dtype=torch.long, device=device)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long, device=device)
    for i, (e, lb) in enumerate(zip(seqs, labs)):
        n = e.shape[0]
        inputs[i, :n] = e
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(lb, dtype=torch.long, device=device)
    return inputs, mask, labels


def lm_loss(llm, inputs_embeds: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Shifted causal-LM cross-entropy, mean over the target tokens, logits in float32 (§10.3).

    Only the hidden states that predict a target go through the LM head, so the (tokens x vocab)
    logits of prompt and visual positions are never materialised (that matters with Qwen's 151k vocab).
    """
    out = llm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    target = labels[:, 1:]
    sel = target != IGNORE_INDEX
    n = int(sel.sum())
    if n == 0:
        # keep the graph connected (every rank must backward) but contribute nothing
        zero = hidden.sum() * 0.0
        return zero, {"loss": 0.0, "tokens": 0.0, "token_accuracy": 0.0}
    logits = llm.lm_head(hidden[sel]).float()
    loss = F.cross_entropy(logits, target[sel])
    acc = float((logits.argmax(-1) == target[sel]).float().mean())
    return loss, {"loss": float(loss.detach()), "tokens": float(n), "token_accuracy": acc}


# =============================================================================================
# Batches
# =============================================================================================

@dataclass
class LanguageItem:
    """One training row: a region of ``batch.sources[source]`` prompted on its first frame."""

    source: int
    point_coords: np.ndarray  # (P, 2) pixels of the source; a box is two points labelled 2, 3
    point_labels: np.ndarray  # (P,)
    ids: list[int]
    labels: list[int]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LanguageBatch:
    """``kind`` "image" (every source one frame) or "video" (sources are frame lists); all rows of a
    batch share the kind, like the official modality-grouped sampler (§10.6)."""

    kind: str
    sources: list[list[Any]]  # per source: frames (uint8 HxWx3 arrays or PIL images)
    items: list[LanguageItem]

    def __len__(self) -> int:
        return len(self.items)


def _box_points(box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(box, dtype=np.float64).reshape(2, 2), np.array([2, 3], dtype=np.int64)


# =============================================================================================
# Data: the synthetic shapes world, on the fly
# =============================================================================================

@dataclass
class ShapesData:
    """On-the-fly samples of the shapes world (``training.synthetic``).

    ``kinds``: weights of ``image`` / ``video`` / ``stream`` batches (one kind per batch, drawn from
    ``(seed, step)`` so every rank draws the same kind). Images: ``regions_per_image`` objects of a
    scene, each with a random task of ``image_tasks`` and a language of ``languages``. Videos: a
    single-clip video of ``video_frames`` frames, ``regions_per_video`` objects tracked from frame 0,
    offline video-caption prompt. Streams: one clip of a ``stream_clips``-clip stream, prompt on the
    clip's first frame (the released streaming layout: disjoint clips, fresh SAM 2 session;
    ``stream_carry_last_frame`` prepends the previous clip's last frame instead, the paper's layout),
    history = the object's caption of the previous clip ("None" for the first clip).

    Prompts follow the official rule for records with both box and points: a box (jittered by
    ``box_jitter`` x its side, as user boxes are never tight) or 1–4 (images) / 1–3 (videos)
    positive clicks inside the object.

    Seeds: the scene/video seed of a sample is always even; :func:`heldout_seed` gives odd seeds, so
    evaluation data can never coincide with training data.
    """

    kinds: dict[str, float] = field(default_factory=lambda: {"image": 1.0})
    image_size: int = 256
    image_tasks: tuple[str, ...] = IMAGE_TASKS
    task_weights: tuple[float, ...] | None = None
    languages: tuple[str, ...] = ("en", "zh")
    regions_per_image: int = 2
    regions_per_video: int = 2
    video_frames: int = 16
    stream_clips: int = 3
    stream_carry_last_frame: bool = False
    box_prob: float = 0.5
    box_jitter: float = 0.05
    # rows of a video/stream batch = this fraction of the batch size (a video row costs ~5 image rows)
    video_batch_fraction: float = 0.5

    def choose_kind(self, step: int, seed: int) -> str:
        names = [k for k, w in self.kinds.items() if w > 0]
        weights = [self.kinds[k] for k in names]
        return random.Random(derive_seed(seed, "kind", step)).choices(names, weights)[0]

    # -- prompts
    def _prompt(self, mask: np.ndarray, box, rng: random.Random, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        from .synthetic import sample_points

        if rng.random() < self.box_prob:
            x0, y0, x1, y1 = (float(v) for v in box)
            w, h = x1 - x0, y1 - y0
            j = self.box_jitter
            jit = [rng.gauss(0.0, j * w), rng.gauss(0.0, j * h), rng.gauss(0.0, j * w), rng.gauss(0.0, j * h)]
            s = mask.shape[1], mask.shape[0]
            nb = [min(max(x0 + jit[0], 0.0), s[0] - 1), min(max(y0 + jit[1], 0.0), s[1] - 1),
                  min(max(x1 + jit[2], 1.0), s[0]), min(max(y1 + jit[3], 1.0), s[1])]
            if nb[2] <= nb[0] + 1 or nb[3] <= nb[1] + 1:
                nb = [x0, y0, x1, y1]
            return _box_points(nb)
        k = rng.randint(1, max_points)
        pts, labs = sample_points(mask, np.random.default_rng(rng.getrandbits(63)), k, 0)
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2), np.asarray(labs, dtype=np.int64)

    # -- samples
    def make(self, kind: str, rng: random.Random, batch_size: int, tokenizer, official: bool) -> LanguageBatch:
        if kind == "image":
            return self._images(rng, batch_size, tokenizer, official)
        if kind in ("video", "stream"):
            rows = max(1, int(round(batch_size * self.video_batch_fraction)))
            return self._videos(kind, rng, rows, tokenizer, official)
        raise ValueError(f"unknown shapes data kind {kind!r}; expected image, video or stream")

    def _images(self, rng, batch_size, tokenizer, official) -> LanguageBatch:
        from .synthetic import generate_scene

        sources, items = [], []
        weights = list(self.task_weights) if self.task_weights else [1.0] * len(self.image_tasks)
        while len(items) < batch_size:
            scene = generate_scene(training_seed(rng), size=self.image_size)
            src = len(sources)
            sources.append([scene.image])
            objs = list(scene.objects)
            rng.shuffle(objs)
            for obj in objs[: min(self.regions_per_image, batch_size - len(items))]:
                task = rng.choices(self.image_tasks, weights)[0]
                lang = rng.choice(self.languages)
                answer = {"label": obj.label[lang], "definition": obj.explanation(lang),
                          "brief_caption": obj.brief_caption[lang],
                          "detailed_caption": obj.detailed_caption[lang]}[task]
                ids, labels = build_training_sequence(
                    tokenizer, [("human", text_proc.task_prompt(task, lang)), ("gpt", answer)],
                    official_label_masking=official)
                pts, labs = self._prompt(obj.mask, obj.box, rng, 4)
                items.append(LanguageItem(src, pts, labs, ids, labels,
                                          {"task": task, "lang": lang, "shape": obj.shape, "color": obj.color}))
        return LanguageBatch("image", sources, items)

    def _videos(self, kind, rng, batch_size, tokenizer, official) -> LanguageBatch:
        from .synthetic import generate_stream, generate_video

        min_px = max(12, int(0.003 * self.image_size ** 2))
        sources, items = [], []
        while len(items) < batch_size:
            seed = training_seed(rng)
            if kind == "video":
                vid = generate_video(seed, num_frames=self.video_frames, size=self.image_size)
                clip = 0
            else:
                vid = generate_stream(seed, num_clips=self.stream_clips, frames_per_clip=self.video_frames,
                                      size=self.image_size)
                clip = rng.randrange(vid.num_clips)
            a, b = vid.clips[clip]
            idx = list(range(a, b))
            if kind == "stream" and self.stream_carry_last_frame and clip > 0:
                idx = [a - 1] + idx
            f0 = idx[0]
            objs = [o for o in vid.objects if o.masks[f0].sum() >= min_px and o.boxes[f0] is not None]
            if not objs:
                continue
            rng.shuffle(objs)
            src = len(sources)
            sources.append([vid.frames[t] for t in idx])
            for obj in objs[: min(self.regions_per_video, batch_size - len(items))]:
                lang = rng.choice(self.languages)
                if kind == "video":
                    prompt = text_proc.task_prompt("video_caption", lang)
                else:
                    hist = obj.events[clip - 1].caption[lang] if clip > 0 else None
                    prompt = text_proc.task_prompt("stream_caption", lang, history=hist)
                ids, labels = build_training_sequence(
                    tokenizer, [("human", prompt), ("gpt", obj.events[clip].caption[lang])],
                    official_label_masking=official)
                pts, labs = self._prompt(obj.masks[f0], obj.boxes[f0], rng, 3)
                items.append(LanguageItem(src, pts, labs, ids, labels, {"task": kind, "lang": lang, "clip": clip}))
        return LanguageBatch("video", sources, items)


def training_seed(rng: random.Random) -> int:
    """An even generator seed (training); :func:`heldout_seed` gives the odd ones (evaluation)."""
    return 2 * rng.getrandbits(30)


def heldout_seed(index: int, namespace: str = "heldout") -> int:
    """The ``index``-th odd generator seed of ``namespace``: never used by :class:`ShapesData`."""
    return 2 * (derive_seed(namespace, index) % (1 << 30)) + 1


# =============================================================================================
# Data: PAM-data records (the official training format, read by training.data)
# =============================================================================================

class PamDataSource:
    """``TrainingSample`` records (``training.data.load_pam_records``) as batches.

    Each step draws its modality (image / video) with probability proportional to the number of
    records of that modality (the same for every rank, as in the official modality-grouped sampler),
    then walks a per-epoch shuffled order of that modality's records with the global sample index
    ``(step * world_size + rank) * batch_size + i`` (sampling with per-epoch reshuffling; when one
    modality is drawn more often than its share some records repeat earlier, a deliberate
    simplification that keeps batches a pure function of the step). The box-or-points choice is
    redrawn per use (official behaviour per epoch). Images are read from disk when the batch is
    built; records with several images use the first.
    """

    def __init__(self, samples: Sequence[Any]):
        self.samples = list(samples)
        if not self.samples:
            raise ValueError("no training records")
        self.by_kind = {k: [i for i, s in enumerate(self.samples) if s.type == k] for k in ("image", "video")}
        self.by_kind = {k: v for k, v in self.by_kind.items() if v}

    @classmethod
    def from_path(cls, path: str | Path, seed: int = 0, image_folder: str | Path | None = None) -> "PamDataSource":
        from .data import load_pam_records

        return cls(load_pam_records(path, seed=seed, image_folder=image_folder))

    def choose_kind(self, step: int, seed: int) -> str:
        names = sorted(self.by_kind)
        weights = [len(self.by_kind[k]) for k in names]
        return random.Random(derive_seed(seed, "kind", step)).choices(names, weights)[0]

    def _order(self, kind: str, epoch: int, seed: int) -> list[int]:
        order = list(self.by_kind[kind])
        random.Random(derive_seed(seed, "epoch", kind, epoch)).shuffle(order)
        return order

    def make_indexed(self, kind: str, step: int, rank: int, world_size: int, batch_size: int, seed: int,
                     tokenizer, official: bool) -> LanguageBatch:
        from ..processing.image import load_image

        n = len(self.by_kind[kind])
        sources, items = [], []
        for i in range(batch_size):
            g = (step * world_size + rank) * batch_size + i
            rec = self.samples[self._order(kind, g // n, seed)[g % n]]
            rec = rec.resample_prompt(random.Random(derive_seed(seed, "prompt", g, kind)))
            paths = rec.visual_paths[:1] if kind == "image" else rec.visual_paths
            frames = [load_image(p) for p in paths]
            src = len(sources)
            sources.append(frames)
            if rec.prompt_kind == "box":
                pts, labs = _box_points(rec.box)
            else:
                pts = np.asarray(rec.points, dtype=np.float64).reshape(-1, 2)
                labs = np.asarray(rec.labels, dtype=np.int64)
            turns = [(t["from"], t["value"]) for t in rec.conversations]
            ids, labels = build_training_sequence(tokenizer, turns, official_label_masking=official)
            items.append(LanguageItem(src, pts, labs, ids, labels, {"id": rec.id, "source": rec.source}))
        return LanguageBatch(kind, sources, items)


# =============================================================================================
# Trainable parameters per stage
# =============================================================================================

def _lora_layer_cls():
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA training needs peft: pip install 'perceive-anything[training]'") from err
    return LoraLayer


def inject_lora(llm: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: Sequence[str] = LORA_TARGETS) -> None:
    """Add LoRA adapters to ``llm``'s linear layers in place (idempotent)."""
    lora_cls = _lora_layer_cls()
    if any(isinstance(m, lora_cls) for m in llm.modules()):
        return
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                       target_modules=list(target_modules), bias="none"), llm)


def merge_lora(llm: nn.Module, prefix: str = "") -> list[str]:
    """Fold every LoRA adapter into its base layer and remove the adapters; returns the names of the
    base weights that changed (``prefix`` + name inside ``llm``)."""
    lora_cls = _lora_layer_cls()
    changed = []
    for name, module in list(llm.named_modules()):
        if not isinstance(module, lora_cls):
            continue
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        setattr(parent, child, module.get_base_layer())
        changed.append(f"{prefix}{name}.weight")
    return changed


def stage_parameters(model, stage: str, lora: bool = False) -> list[nn.Parameter]:
    """Freeze ``model`` and unfreeze the parts trained in ``stage`` (see the module docstring)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; PAM's language stages are {', '.join(STAGES)}")
    model.requires_grad_(False)
    lang = model.language
    params: list[nn.Parameter] = []
    params += list(lang.perceiver.parameters())
    params += list(lang.mm_projector_img.parameters()) + list(lang.mm_projector_semT.parameters())
    params += [lang.image_newline, lang.semT_newline, lang.frame_newline]
    if stage == "2":
        if lora:
            inject_lora(lang.llm)
            params += [p for n, p in lang.llm.named_parameters() if "lora_" in n]
        else:
            params += list(lang.llm.parameters())
    for p in params:
        p.requires_grad_(True)
    # tied weights appear once
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


# =============================================================================================
# The task
# =============================================================================================

class LanguageTask:
    """A language stage of PAM (``"1"``, ``"1.5"``, ``"2"``) on shapes-world or PAM-data samples.

    Args:
        stage: which parts train (module docstring).
        data: ``"shapes"`` (default mixture of the stage), a :class:`ShapesData`, a
            :class:`PamDataSource`, a list of ``TrainingSample`` or a path to a PAM-data
            ``.yaml``/``.json``/``.jsonl``.
        tokenizer: the model's tokenizer (ChatML specials required).
        official_label_masking: reproduce the official label quirk (module docstring).
        lora: stage 2 only: LoRA adapters on the LLM instead of full fine-tuning (needs ``peft``).
        max_length: truncate merged sequences (default: the model config's
            ``tokenizer_model_max_length``).
    """

    def __init__(self, stage: str, data: Any = "shapes", *, tokenizer, official_label_masking: bool = False,
                 lora: bool = False, max_length: int | None = None, name: str | None = None,
                 image_folder: str | Path | None = None, align_weight: float = 0.0):
        stage = str(stage)
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; PAM's language stages are {', '.join(STAGES)}")
        if lora and stage != "2":
            raise ValueError("LoRA adapters are a stage-2 option (stages 1 and 1.5 keep the LLM frozen)")
        self.stage = stage
        self.tokenizer = tokenizer
        self.official_label_masking = official_label_masking
        self.lora = lora
        self.max_length = max_length
        if align_weight and not (isinstance(data, ShapesData) or (isinstance(data, str) and data == "shapes")):
            raise ValueError("align_weight needs shapes data (its items name the region's shape and colour)")
        self.data = self._resolve_data(stage, data, image_folder)
        self.align_weight = float(align_weight)
        self._align_targets: list[tuple[str, tuple[str, ...], list[list[int]]]] | None = None
        self.name = name or f"language-stage{stage}" + ("-lora" if lora else "")

    @staticmethod
    def default_shapes(stage: str) -> ShapesData:
        if stage == "1":
            return ShapesData(kinds={"image": 1.0})
        if stage == "1.5":
            return ShapesData(kinds={"video": 0.5, "stream": 0.5})
        return ShapesData(kinds={"image": 0.6, "video": 0.2, "stream": 0.2})

    @classmethod
    def _resolve_data(cls, stage, data, image_folder):
        if isinstance(data, str) and data == "shapes":
            return cls.default_shapes(stage)
        if isinstance(data, (ShapesData, PamDataSource)):
            return data
        if isinstance(data, (str, Path)):
            return PamDataSource.from_path(data, image_folder=image_folder)
        if isinstance(data, (list, tuple)):
            return PamDataSource(data)
        raise TypeError(f"unsupported data {type(data).__name__}: give 'shapes', ShapesData, a PAM-data path or samples")

    # -- protocol
    def trainable_parameters(self, model) -> list[nn.Parameter]:
        return stage_parameters(model, self.stage, lora=self.lora)

    def finish_phase(self, model) -> list[str]:
        """Merge LoRA adapters (if any) so the model is a plain PAM again; names of changed weights."""
        if not self.lora:
            return []
        return merge_lora(model.language.llm, prefix="language.llm.")

    def make_batch(self, step: int, rank: int, world_size: int, batch_size: int, seed: int) -> LanguageBatch:
        kind = self.data.choose_kind(step, seed)
        if isinstance(self.data, PamDataSource):
            return self.data.make_indexed(kind, step, rank, world_size, batch_size, seed, self.tokenizer,
                                          self.official_label_masking)
        rng = random.Random(derive_seed(seed, "shapes", step, rank))
        return self.data.make(kind, rng, batch_size, self.tokenizer, self.official_label_masking)

    def loss(self, model, batch: LanguageBatch) -> tuple[Tensor, dict[str, float]]:
        lang = model.language
        blocks = self.visual_blocks(model, batch)
        max_len = self.max_length or model.config.tokenizer_model_max_length
        embeds, mask, labels = splice_right_padded(lang, [(it.ids, it.labels) for it in batch.items], blocks, max_len)
        loss, metrics = lm_loss(lang.llm, embeds, mask, labels)
        metrics[f"rows_{batch.kind}"] = float(len(batch.items))
        if self.align_weight > 0 and batch.kind == "image":
            align, align_metrics = self.alignment_loss(model, batch, blocks)
            loss = loss + self.align_weight * align
            metrics.update(align_metrics)
        return loss, metrics

    def _targets(self) -> list[tuple[str, tuple[str, ...], list[list[int]]]]:
        """Per region attribute (``synthetic.REGION_ATTRIBUTES``): class names and the token ids of
        each class word as answers write it (a label answer starts with the shape word; other words
        follow a space)."""
        if self._align_targets is None:
            from .synthetic import REGION_ATTRIBUTES

            def ids(text: str) -> list[int]:
                return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

            self._align_targets = [(key, names, [ids(w if key == "shape" else " " + w) for w in names])
                                   for key, names in REGION_ATTRIBUTES.items()]
        return self._align_targets

    def alignment_loss(self, model, batch: LanguageBatch, blocks: Sequence[Tensor],
                       temperature: float = 0.1) -> tuple[Tensor, dict[str, float]]:
        """Region-word alignment of image rows (module docstring). ``blocks``: their visual blocks."""
        lang = model.language
        n_sem = lang.config.perceiver.num_sem_tokens
        # image block = [image tokens; image_newline; sem tokens; semT_newline]
        sem = torch.stack([b[-(n_sem + 1):-1].float().mean(0) for b in blocks])
        sem = F.normalize(sem, dim=-1)
        emb = lang.llm.get_input_embeddings().weight
        total = sem.new_zeros(())
        metrics: dict[str, float] = {}
        for key, names, ids in self._targets():
            words = F.normalize(torch.stack([emb[torch.tensor(t, device=emb.device)].float().mean(0) for t in ids]), dim=-1)
            target = torch.tensor([names.index(it.meta[key]) for it in batch.items], device=sem.device)
            logits = sem @ words.T / temperature
            total = total + F.cross_entropy(logits, target)
            metrics[f"align_acc_{key}"] = float((logits.argmax(1) == target).float().mean())
        metrics["loss_align"] = float(total.detach())
        return total, metrics

    # -- visual side
    def visual_blocks(self, model, batch: LanguageBatch) -> list[Tensor]:
        """The visual block of every row (SAM 2 mid features -> perceiver -> projectors -> separators)."""
        seg = model.segmenter
        train_seg = any(p.requires_grad for p in seg.parameters())
        with torch.set_grad_enabled(train_seg and torch.is_grad_enabled()):
            if batch.kind == "image":
                embed, tokens = image_mids(model, batch)
            else:
                mids = video_mids(model, batch)
        lang = model.language
        if batch.kind == "image":
            return list(lang.image_visual_block(embed, tokens).unbind(0))
        return _video_blocks(lang, mids)


def _video_blocks(lang, mids: list[list[tuple[Tensor, Tensor]]]) -> list[Tensor]:
    """``video_visual_block`` for many rows at once: the perceiver and projectors run once on all
    first frames (1/2 shuffle) and once on all other frames (1/4 shuffle) instead of once per frame
    (tens of tiny calls per row dominate the step time on a CPU). Same values as the per-frame path."""
    pcfg = lang.config.perceiver
    firsts = [row[0] for row in mids]
    rest = [fr for row in mids for fr in row[1:]]
    img0, sem0 = lang._frame_tokens(torch.cat([e for e, _ in firsts]), torch.cat([t for _, t in firsts]),
                                    pcfg.image_shuffle, 0)
    if rest:
        img1, sem1 = lang._frame_tokens(torch.cat([e for e, _ in rest]), torch.cat([t for _, t in rest]),
                                        pcfg.frame_shuffle, 1)
    blocks, k = [], 0
    for r, row in enumerate(mids):
        projected = [(img0[r], sem0[r])]
        for _ in row[1:]:
            projected.append((img1[k], sem1[k]))
            k += 1
        blocks.append(lang.assemble_block(projected, video=True))
    return blocks


def _to_pil(frame) -> Image.Image:
    return frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))


def _pixels(model, frames: Sequence[Any]) -> Tensor:
    from ..processing.image import preprocess_image

    size = model.config.segmenter.image_size
    seg = model.segmenter
    return torch.cat([preprocess_image(_to_pil(f), size) for f in frames]).to(seg.device, seg.dtype)


def _sam_prompt(model, item: LanguageItem, wh: tuple[int, int]) -> tuple[Tensor, Tensor]:
    from ..processing.prompts import to_sam_points

    seg = model.segmenter
    coords, labels = to_sam_points(item.point_coords, item.point_labels, wh, model.config.segmenter.image_size, seg.dtype)
    return coords.to(seg.device), labels.to(seg.device)


def image_mids(model, batch: LanguageBatch) -> tuple[Tensor, Tensor]:
    """(R, C, F, F) and (R, 2, C) mid features of every row, one image-encoder call for the batch."""
    seg = model.segmenter
    feats = seg.encode_image(_pixels(model, [s[0] for s in batch.sources]))
    embeds: list[Tensor | None] = [None] * len(batch.items)
    tokens: list[Tensor | None] = [None] * len(batch.items)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(batch.items):
        # regions of one image with the same number of prompt points share a mask-decoder call
        groups.setdefault((it.source, len(it.point_labels)), []).append(i)
    for (src, _), rows in groups.items():
        w, h = _to_pil(batch.sources[src][0]).size
        prompts = [_sam_prompt(model, batch.items[i], (w, h)) for i in rows]
        out = seg.segment(feats.select(src), torch.stack([c for c, _ in prompts]), torch.stack([lab for _, lab in prompts]))
        for j, i in enumerate(rows):
            embeds[i] = out.mid_image_embed[j]
            tokens[i] = out.mid_mask_tokens[j]
    return torch.stack(embeds), torch.stack(tokens)


def video_mids(model, batch: LanguageBatch) -> list[list[tuple[Tensor, Tensor]]]:
    """Per row, the (mid_image_embed, mid_mask_tokens) of the LLM frames (official selection rule)."""
    from ..processing.video import llm_frame_positions

    seg = model.segmenter
    per_source: dict[int, list[int]] = {}
    for i, it in enumerate(batch.items):
        per_source.setdefault(it.source, []).append(i)
    result: list[list[tuple[Tensor, Tensor]] | None] = [None] * len(batch.items)
    for src, rows in per_source.items():
        frames = batch.sources[src]
        n = len(frames)
        positions = llm_frame_positions(n, model.config.video_llm_frames)
        wanted = set(positions)
        w, h = _to_pil(frames[0]).size
        feats = seg.encode_image(_pixels(model, frames))  # every frame at once: one batched encoder call
        session = seg.new_tracking_session(num_frames=n)
        for k, i in enumerate(rows):
            coords, labels = _sam_prompt(model, batch.items[i], (w, h))
            seg.add_prompt(session, 0, k + 1, point_coords=coords, point_labels=labels)
        kept: dict[int, dict[int, tuple[Tensor, Tensor]]] = {k + 1: {} for k in range(len(rows))}
        for t in range(n):
            outs = seg.track_frame(session, t, features=feats.select(t))
            if t in wanted:
                for obj_id, out in outs.items():
                    kept[obj_id][t] = (out.mid_image_embed, out.mid_mask_tokens)
        for k, i in enumerate(rows):
            result[i] = [kept[k + 1][p] for p in positions]
    return result  # type: ignore[return-value]
