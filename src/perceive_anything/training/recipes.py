"""Training recipes behind ``pam train``.

``shapes``: the embedded tiny model, from scratch, on the synthetic shapes world: the SAM 2
segmenter (image segmentation, then image + video tracking), then PAM's language stages 1, 1.5
and 2 (see ``training.language``), then stage 2 once more on image regions only (grounding),
briefly on the full mixture again (refresh), and last SAM 2's object-score head alone on objects
leaving the view (exit head).
``steps_scale`` multiplies every phase's step count (a test uses ~0.01; 1.0 is the full recipe,
about 75 minutes on 2 CPU cores).

``pam_data``: a language stage on PAM-data records (the official training format) starting from
a model folder or a preset.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .trainer import Phase, TaskMix, Trainer, TrainerConfig, TrainingInterrupted, dist_info

__all__ = ["ShapesRecipe", "SHAPES_RECIPE", "build_shapes_phases", "train_shapes", "train_pam_data"]


@dataclass
class ShapesRecipe:
    """Step counts and learning rates of the shapes recipe (at ``steps_scale=1``).

    Measured with ``--threads 2`` on an otherwise idle 2-core CPU (73 min before the exit head):
    SAM image phase 0.54 s/step (27 min), SAM image+video 0.71 s/step (12 min), language stage 1 0.22 s/step,
    stage 1.5 2.0 s/step, stage 2 (mixed) 1.1 s/step (22 min), grounding 0.24 s/step (5 min),
    refresh 1.0 s/step (3.5 min); exit head 0.25 s/step (1.7 min, on a machine shared with other work).
    """

    sam_image_steps: int = 3000
    sam_mix_steps: int = 1000
    sam_lr: float = 1e-3
    sam_weight_decay: float = 0.05
    sam_image_batch: int = 8
    sam_video_batch: int = 2
    # Four prompted objects per scene of 2-6: "segment all the foreground" is then a poor answer, so
    # the decoder has to use the prompt. Dice weighted 5x (SAM uses 1x with focal 20x): with SAM's
    # ratio a from-scratch model sits ~500 steps predicting nothing; 5x leaves that saddle in ~100
    # (measured on held-out boxes: IoU 0.23 vs 0.00 at step 400 of the same schedule).
    sam_regions_per_image: int = 4
    sam_objects: tuple[int, int] = (2, 6)
    sam_dice_weight: float = 5.0
    # region semantics in the segmenter's prompted mask token (``LossWeights.semantic``) and
    # region-word alignment in the language stages (``LanguageTask(align_weight=...)``)
    sam_semantic_weight: float = 1.0
    language_align_weight: float = 1.0
    stage1_steps: int = 200
    stage15_steps: int = 100
    stage2_steps: int = 1200
    # then stage 2 again on image regions only (label + brief caption), at a lower lr: the LLM has
    # learned the language by now and learns to read the region's visual tokens (measured: captions
    # name the region's colour 92 % of the time after it vs 11 % before)
    grounding_steps: int = 1200
    grounding_lr: float = 1e-3
    # then a short stage 2 on the full mixture (images, videos, streams): the image-only grounding
    # phase overwrites video captioning (measured: video caption CIDEr 0.61 -> 0.06)
    refresh_steps: int = 200
    refresh_lr: float = 5e-4
    # last, SAM 2's object-score head alone (the MLP that decides present / absent) on tracking
    # windows placed across generated exits, alternating with still-image regions that keep it
    # saying "present". Trained with the whole segmenter, exits cost tracking (mIoU 0.84 -> 0.48)
    # and taught nothing; the head alone leaves masks and the language path as they were.
    exit_head_steps: int = 400
    exit_head_lr: float = 2e-3
    exit_head_exit_prob: float = 0.75
    language_lr: float = 2e-3  # the tiny LLM learns from scratch: higher than a fine-tuning lr
    language_batch: int = 8
    warmup: float = 0.05


SHAPES_RECIPE = ShapesRecipe()


def _scaled(n: int, scale: float) -> int:
    return max(1, int(math.ceil(n * scale)))


def build_shapes_phases(tokenizer, steps_scale: float = 1.0, recipe: ShapesRecipe = SHAPES_RECIPE,
                        segmenter: bool = True) -> list[Phase]:
    """The phases of the shapes recipe (segmenter phases first unless ``segmenter=False``)."""
    from .language import LanguageTask

    r = recipe
    phases: list[Phase] = []
    if segmenter:
        from .segmentation import ImageSegmentationTask, LossWeights, VideoTrackingTask

        weights = LossWeights(dice=r.sam_dice_weight, semantic=r.sam_semantic_weight)
        image_task = ImageSegmentationTask(regions_per_image=r.sam_regions_per_image, num_objects=r.sam_objects,
                                           weights=weights)
        phases.append(Phase(image_task, _scaled(r.sam_image_steps, steps_scale), r.sam_lr, r.sam_image_batch,
                            weight_decay=r.sam_weight_decay, warmup=r.warmup, name="sam-image"))
        # the memory modules learn once the decoder segments: video tracking joins in the second phase,
        # as half of the steps (a video step costs about two image steps)
        mix = TaskMix([(image_task, 1.0, r.sam_image_batch), (VideoTrackingTask(weights=weights), 1.0, r.sam_video_batch)],
                      name="sam-image+video")
        phases.append(Phase(mix, _scaled(r.sam_mix_steps, steps_scale), r.sam_lr, r.sam_image_batch,
                            weight_decay=r.sam_weight_decay, warmup=r.warmup, name="sam-image+video"))
    for stage, steps in (("1", r.stage1_steps), ("1.5", r.stage15_steps), ("2", r.stage2_steps)):
        task = LanguageTask(stage, tokenizer=tokenizer, align_weight=r.language_align_weight)
        phases.append(Phase(task, _scaled(steps, steps_scale), r.language_lr,
                            r.language_batch, warmup=r.warmup, name=f"language-stage{stage}"))
    if r.grounding_steps:
        from .language import ShapesData

        data = ShapesData(kinds={"image": 1.0}, image_tasks=("label", "brief_caption"))
        task = LanguageTask("2", data, tokenizer=tokenizer, align_weight=r.language_align_weight,
                            name="language-stage2-grounding")
        phases.append(Phase(task, _scaled(r.grounding_steps, steps_scale), r.grounding_lr, r.language_batch,
                            warmup=r.warmup))  # named after its task
    if r.refresh_steps:
        task = LanguageTask("2", tokenizer=tokenizer, align_weight=r.language_align_weight,
                            name="language-stage2-refresh")
        phases.append(Phase(task, _scaled(r.refresh_steps, steps_scale), r.refresh_lr, r.language_batch,
                            warmup=r.warmup))
    if segmenter and r.exit_head_steps:
        from .segmentation import ImageSegmentationTask, LossWeights, VideoTrackingTask

        only = LossWeights(focal=0.0, dice=0.0, iou=0.0, multimask=0.0, object=1.0)
        head = "object_score_head"
        mix = TaskMix([(ImageSegmentationTask(regions_per_image=r.sam_regions_per_image, num_objects=r.sam_objects,
                                              weights=only, train_only=head), 1.0, r.sam_image_batch),
                       (VideoTrackingTask(weights=only, exit_prob=r.exit_head_exit_prob, train_only=head), 1.0,
                        r.sam_video_batch)], name="sam-exit-head")
        phases.append(Phase(mix, _scaled(r.exit_head_steps, steps_scale), r.exit_head_lr, r.sam_image_batch,
                            warmup=r.warmup, name="sam-exit-head"))
    return phases


def _generation_settings(tokenizer):
    from ..generation import GenerationSettings

    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return GenerationSettings(max_new_tokens=96, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)


def _save_final(model, tokenizer, out: Path, name: str, generation=None) -> Path:
    from ..checkpoints import LoadedModel, save_pretrained

    model.to("cpu")  # trained on any device, saved and handed back as CPU weights
    rank, _ = dist_info()
    if rank == 0:
        model.eval()
        save_pretrained(LoadedModel(model, tokenizer, generation or _generation_settings(tokenizer), name, str(out)), out)
    return out


def train_shapes(out: str | os.PathLike, *, steps_scale: float = 1.0, seed: int = 0, resume: bool = False,
                 checkpoint_every: int = 50, threads: int | None = None, quiet: bool = False,
                 stop_after: int | None = None, recipe: ShapesRecipe = SHAPES_RECIPE,
                 segmenter: bool = True, precision: str = "auto", device: str | None = None,
                 init_from: str | os.PathLike | None = None, start_phase: str | None = None) -> Path:
    """``pam train --recipe shapes``: build the tiny-shapes model and train it; returns ``out``.

    ``init_from`` + ``start_phase``: continue the recipe from a tiny-shapes model folder that an
    earlier run of its phases before ``start_phase`` (a phase name) made, e.g. when phases are
    appended to the recipe: the remaining phases see exactly the batches of an uninterrupted run
    (``TrainerConfig.start_phase``). Resume such a run with the same two arguments.

    The model folder (``pam_config.json``, ``model.safetensors``, tokenizer) is written to ``out``
    at the end; ``out/train_log.jsonl`` logs every step and ``out/checkpoint`` allows ``resume``.
    ``device``: as for :func:`train_pam_data` (CUDA when available). The step counts and measured
    times of :class:`ShapesRecipe` are for 2 CPU cores; on a GPU the same phases run with bf16
    autocast under ``precision="auto"``.
    """
    from ..config import pam_preset
    from ..modeling.pam import PamModel
    from .tokenizer import build_shapes_tokenizer

    if (init_from is None) != (start_phase is None):
        raise ValueError("init_from and start_phase (--init-from, --start-phase) go together: the model folder "
                         "holds the result of the phases before start_phase")
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # tiny activations make x86 CPUs many times slower
    dev = _training_device(device)
    tokenizer = build_shapes_tokenizer(seed=seed)
    phases = build_shapes_phases(tokenizer, steps_scale, recipe, segmenter=segmenter)
    first = 0
    if start_phase is not None:
        names = [p.name for p in phases]
        if start_phase not in names:
            raise ValueError(f"start_phase {start_phase!r} is not a phase of this recipe: {names}")
        first = names.index(start_phase)
    loaded = None
    if init_from is not None:  # read before anything is written: a bad folder leaves no trace
        from ..checkpoints import load_pretrained

        loaded = load_pretrained(str(init_from))
        if len(loaded.tokenizer) != len(tokenizer) or loaded.tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"{init_from}: its tokenizer is not the shapes recipe's (seed {seed})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    config = pam_preset("tiny-shapes")
    config.tokenizer_vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    model = PamModel(config)
    if loaded is not None:
        model.load_state_dict(loaded.model.state_dict(), strict=True)  # same preset: a name or shape mismatch raises
    elif segmenter:
        from .segmentation import init_for_training

        # From scratch, transformers' N(0, 0.02) init leaves the tiny SAM 2 predicting nothing for
        # hundreds of steps; PyTorch's default init (the official SAM's) does not (see init_for_training).
        init_for_training(model, seed)
    model.to(dev)
    trainer = Trainer(model, phases, TrainerConfig(out, seed=seed, resume=resume, checkpoint_every=checkpoint_every,
                                                  quiet=quiet, stop_after=stop_after, precision=precision, device=dev,
                                                  start_phase=first))
    trainer.run()
    _save_final(model, tokenizer, out, "tiny-shapes")
    rank, _ = dist_info()
    if rank == 0:
        with open(out / Trainer.LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": "saved", "path": str(out), "seconds": round(time.time() - t0, 1)}) + "\n")
    return out


def _training_device(device: str | None) -> torch.device:
    """``--device`` of ``pam train`` (checked by ``predictor.resolve_device``): CUDA when available,
    else the CPU, unless named. Under torchrun a plain ``cuda`` means this process's GPU
    (``LOCAL_RANK``): NCCL refuses two processes on one GPU."""
    from ..predictor import resolve_device

    if not device:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return resolve_device(device, what="--device")


def _load_start_model(model: str, tokenizer_path: str | None):
    """A model folder / hub id (via ``load_pretrained``) or a preset name (fresh weights)."""
    from ..checkpoints import load_pretrained
    from ..config import PAM_PRESETS, pam_preset
    from ..modeling.pam import PamModel
    from ..processing.text import load_tokenizer

    if model.lower() in PAM_PRESETS and not Path(model).exists():
        config = pam_preset(model)
        if tokenizer_path:
            tokenizer = load_tokenizer(tokenizer_path)
        elif model.lower() == "tiny-shapes":
            from .tokenizer import build_shapes_tokenizer

            tokenizer = build_shapes_tokenizer()
        else:
            raise ValueError(f"preset {model!r} starts from fresh weights and needs --tokenizer (a Qwen2.5 folder)")
        config.tokenizer_vocab_size = len(tokenizer)
        return PamModel(config), tokenizer, None, config.name
    loaded = load_pretrained(model)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else loaded.tokenizer
    return loaded.model, tokenizer, loaded.generation, loaded.name


def train_pam_data(data: str | os.PathLike, model: str, out: str | os.PathLike, *, stage: str = "2",
                   steps: int | None = None, epochs: float = 1.0, lr: float = 1e-5, batch_size: int = 2,
                   grad_accum: int = 8, warmup: float = 0.03, weight_decay: float = 0.0, seed: int = 0,
                   lora: bool = False, official_label_masking: bool = False, gradient_checkpointing: bool = False,
                   precision: str = "auto", device: str | None = None, resume: bool = False,
                   checkpoint_every: int = 500, image_folder: str | None = None, tokenizer: str | None = None,
                   threads: int | None = None, quiet: bool = False) -> Path:
    """``pam train --data PAM_DATA.yaml --model DIR_OR_PRESET --stage 2``: one language stage on real
    data. Defaults follow the released stage-2 script (lr 1e-5, cosine, warmup 3 %, weight decay 0,
    per-device batch 2 x accumulation 8). ``steps`` defaults to ``epochs`` passes over the records."""
    from .language import LanguageTask, PamDataSource

    if threads:
        torch.set_num_threads(threads)
    dev = _training_device(device)
    out = Path(out)
    pam, tok, generation, name = _load_start_model(model, tokenizer)
    pam.to(dev)
    source = PamDataSource.from_path(data, seed=seed, image_folder=image_folder)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; the process group starts in Trainer
    if steps is None:
        per_step = batch_size * grad_accum * world
        steps = max(1, int(math.ceil(epochs * len(source.samples) / per_step)))
    task = LanguageTask(stage, source, tokenizer=tok, lora=lora, official_label_masking=official_label_masking)
    phase = Phase(task, steps, lr, batch_size, grad_accum=grad_accum, warmup=warmup, weight_decay=weight_decay,
                  name=f"language-stage{stage}")
    trainer = Trainer(pam, [phase], TrainerConfig(out, seed=seed, resume=resume, checkpoint_every=checkpoint_every,
                                                 gradient_checkpointing=gradient_checkpointing, precision=precision,
                                                 device=dev, quiet=quiet))
    trainer.run()
    return _save_final(pam, tok, out, name, generation)


# ``pam train`` options that only one mode reads (argparse dests); both read out, seed, resume,
# checkpoint_every, threads, quiet, precision and device
RECIPE_OPTIONS = ("steps_scale", "skip_segmenter", "init_from", "start_phase")
DATA_OPTIONS = ("model", "tokenizer", "stage", "steps", "epochs", "lr", "batch_size", "grad_accum", "lora",
                "official_label_masking", "gradient_checkpointing", "image_folder")


def _given(args, dests: tuple[str, ...]) -> dict[str, object]:
    return {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}


def _flags(dests) -> str:
    return ", ".join("--" + d.replace("_", "-") for d in dests)


def main_train(args) -> int:
    """Entry point of ``pam train`` (argparse namespace from ``cli.py``)."""
    try:
        recipe_opts, data_opts = _given(args, RECIPE_OPTIONS), _given(args, DATA_OPTIONS)
        if args.recipe and args.data:
            raise ValueError("pam train takes --recipe or --data, not both")
        if args.recipe:
            if args.recipe != "shapes":
                raise ValueError(f"unknown recipe {args.recipe!r}; available: shapes")
            if data_opts:
                raise ValueError(f"{_flags(data_opts)}: only for --data training; --recipe shapes fixes its own "
                                 "model, steps and learning rates (scale them with --steps-scale)")
            path = train_shapes(args.out, steps_scale=recipe_opts.get("steps_scale", 1.0), seed=args.seed,
                                resume=args.resume, checkpoint_every=args.checkpoint_every or 50,
                                threads=args.threads, quiet=args.quiet,
                                segmenter=not recipe_opts.get("skip_segmenter", False), precision=args.precision,
                                device=args.device, init_from=recipe_opts.get("init_from"),
                                start_phase=recipe_opts.get("start_phase"))
        else:
            if not args.data or not args.model:
                raise ValueError("pam train needs --recipe shapes, or --data PAM_DATA.yaml with --model DIR_OR_PRESET")
            if recipe_opts:
                raise ValueError(f"{_flags(recipe_opts)}: only for --recipe shapes, not for --data training")
            data_opts.pop("model")
            path = train_pam_data(args.data, args.model, args.out, seed=args.seed, precision=args.precision,
                                  device=args.device, resume=args.resume, checkpoint_every=args.checkpoint_every or 500,
                                  threads=args.threads, quiet=args.quiet, **data_opts)
    except TrainingInterrupted as err:  # only with stop_after (tests)
        print(f"pam: {err}", file=sys.stderr)
        return 3
    rank, _ = dist_info()
    if rank == 0:
        print(json.dumps({"saved": str(path)}))
    return 0
