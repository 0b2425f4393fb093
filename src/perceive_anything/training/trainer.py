"""A small, generic trainer for PAM's parts: phases of tasks, exact resume, data parallel.

Every trainable part of PAM (the SAM 2 segmenter, the language stages) is a :class:`TrainingTask`:
it names the parameters it trains, builds a batch from nothing but ``(seed, step, rank)`` and
computes a loss. The :class:`Trainer` runs a list of :class:`Phase` objects (task, steps, learning
rate, batch size, ...) one after the other, or a weighted mix of tasks inside one phase
(:class:`TaskMix`), with

* AdamW, linear warmup + cosine decay, gradient clipping, gradient accumulation;
* optional gradient checkpointing of the LLM and bf16 autocast (fp32 on CPU by default);
* JSON-lines logging (one object per step, plus phase / checkpoint events) that can be followed
  with ``tail -f`` while a long run goes on;
* a checkpoint every N steps (the weights trained so far, optimizer, scheduler, every rank's RNG
  states, phase and step) and **exact resume**: a run killed at any point and resumed from its last
  checkpoint produces the same losses and weights as an uninterrupted run. This holds because
  batches are pure functions of ``(seed, step, rank)`` (no data-loader position to restore) and
  all optimizer / scheduler / RNG state is saved;
* multi-process data parallelism through ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on
  CUDA): every rank builds its own shard with ``make_batch(step, rank, world_size, ...)`` and the
  gradients are averaged with an explicit all-reduce. An explicit all-reduce (rather than DDP) is
  used because tasks change the model between phases (freezing parts, injecting LoRA adapters) and
  may leave some trainable parameters without a gradient on some ranks; DDP handles neither well.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "TrainingTask",
    "TaskMix",
    "Phase",
    "TrainerConfig",
    "Trainer",
    "TrainingInterrupted",
    "cosine_with_warmup",
    "derive_seed",
    "dist_info",
]


# =============================================================================================
# The task protocol (shared with training/segmentation.py)
# =============================================================================================

@runtime_checkable
class TrainingTask(Protocol):
    """What the trainer needs from a task.

    ``trainable_parameters(model)`` freezes/unfreezes the model's parameters for this task (it sets
    ``requires_grad``) and returns the ones to optimise; it may change the model's structure (e.g.
    inject LoRA adapters) and must be idempotent. ``make_batch`` must be a pure function of its
    arguments (deterministic in ``(seed, step, rank)``), which is what makes resuming exact and lets
    every rank draw its own shard. ``loss`` returns a scalar tensor and float metrics for the log.

    Optional hook: ``finish_phase(model) -> Iterable[str] | None`` runs when the phase ends (e.g. to
    merge LoRA adapters into the base weights) and returns the names of parameters it changed, so
    they are saved in later checkpoints.
    """

    name: str

    def trainable_parameters(self, model) -> list[torch.nn.Parameter]: ...

    def make_batch(self, step: int, rank: int, world_size: int, batch_size: int, seed: int) -> Any: ...

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]: ...


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple of ints/strings, stable across processes and Python runs (unlike
    ``hash``), so that ``make_batch(seed, step, rank)`` is reproducible anywhere."""
    digest = hashlib.sha256(repr(tuple(int(p) if isinstance(p, (int, np.integer)) else str(p) for p in parts)).encode())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


class TaskMix:
    """Several tasks trained together: each optimizer step draws one task by weight.

    The draw depends only on ``(seed, step)`` — never on the rank — so all ranks run the same task
    in a step (same compute graph, same parameters receiving gradients), like the modality-grouped
    sampler of the official trainer. The trainable set is the union of the tasks' sets.
    """

    def __init__(self, tasks: Sequence[tuple] | dict[TrainingTask, float], name: str | None = None):
        items = list(tasks.items()) if isinstance(tasks, dict) else list(tasks)
        if not items:
            raise ValueError("TaskMix needs at least one (task, weight) pair")
        # (task, weight) or (task, weight, batch_size): a per-task batch size overrides the phase's
        # (a video batch costs many image batches)
        items = [tuple(it) + (None,) * (3 - len(it)) for it in items]
        if any(w < 0 for _, w, _ in items) or sum(w for _, w, _ in items) <= 0:
            raise ValueError("TaskMix weights must be >= 0 with a positive sum")
        self.tasks = [t for t, _, _ in items]
        self.batch_sizes = [b for _, _, b in items]
        total = sum(w for _, w, _ in items)
        self.weights = [w / total for _, w, _ in items]
        self.name = name or "+".join(t.name for t in self.tasks)

    def choose(self, step: int, seed: int) -> int:
        u = random.Random(derive_seed(seed, "taskmix", step)).random()
        acc = 0.0
        for i, w in enumerate(self.weights):
            acc += w
            if u < acc:
                return i
        return len(self.weights) - 1

    def trainable_parameters(self, model) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for task in self.tasks:
            # each task freezes everything it does not train; collect first, then re-enable the union
            for p in task.trainable_parameters(model):
                seen[id(p)] = p
        for p in seen.values():
            p.requires_grad_(True)
        return list(seen.values())

    def make_batch(self, step: int, rank: int, world_size: int, batch_size: int, seed: int):
        i = self.choose(step, seed)
        bs = self.batch_sizes[i] or batch_size
        return i, self.tasks[i].make_batch(step, rank, world_size, bs, seed)

    def loss(self, model, batch):
        i, sub = batch
        loss, metrics = self.tasks[i].loss(model, sub)
        return loss, {**metrics, f"task_{i}": 1.0}

    def finish_phase(self, model):
        changed: list[str] = []
        for task in self.tasks:
            hook = getattr(task, "finish_phase", None)
            if hook is not None:
                changed += list(hook(model) or [])
        return changed


@dataclass
class Phase:
    """One training phase: ``steps`` optimizer steps of ``task`` (a task or a :class:`TaskMix`).

    ``batch_size`` is per rank and per micro-batch; one optimizer step sees
    ``batch_size * grad_accum * world_size`` samples. ``warmup`` is a fraction of ``steps`` (< 1) or
    a number of steps (>= 1). ``min_lr_ratio`` is where the cosine ends (fraction of ``lr``).
    """

    task: Any
    steps: int
    lr: float
    batch_size: int = 1
    grad_accum: int = 1
    warmup: float = 0.03
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    min_lr_ratio: float = 0.0
    name: str | None = None

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.name is None:
            self.name = getattr(self.task, "name", type(self.task).__name__)

    @property
    def warmup_steps(self) -> int:
        if self.warmup >= 1:
            return int(self.warmup)
        return int(math.ceil(self.warmup * self.steps))

    def signature(self) -> dict[str, Any]:
        """What must not change between a run and its resume."""
        return {"name": self.name, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                "grad_accum": self.grad_accum}


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier of optimizer step ``step`` (0-based): linear warmup from ``1/warmup`` (the first
    step already learns, unlike a warmup starting at 0), then a half cosine that would reach
    ``min_ratio`` one step after the last one."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainerConfig:
    """Trainer-wide settings.

    ``precision``: ``"auto"`` (bf16 autocast on CUDA when supported, else fp32), ``"fp32"``, ``"bf16"``.
    ``checkpoint_every``: optimizer steps between checkpoints (0: only at phase ends).
    ``stop_after``: stop (as if killed) after this many optimizer steps of the whole run; used to
    test resuming. Nothing is saved at the stop beyond the periodic checkpoints.
    ``start_phase``: the phases before this index are taken as done, the model passed in holding
    their result (a model an earlier run of the same phases made). Later phases keep their own data
    seeds and schedules, so they see exactly the batches an uninterrupted run sees, and end where it
    ends unless they draw random numbers of their own (dropout; the global RNG state at the phase
    boundary is not known). A checkpoint found with ``resume`` takes precedence.
    """

    out_dir: str | os.PathLike
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 100
    log_every: int = 1
    print_every: int = 10
    resume: bool = False
    stop_after: int | None = None
    start_phase: int = 0
    device: str | torch.device | None = None
    quiet: bool = False
    # flush denormal floats to zero on CPU: tiny activations of a freshly initialised SAM 2 otherwise
    # make x86 CPUs ~10x slower (same reason as in PerceiveAnything); no effect on results that matter
    flush_denormal: bool = True


class TrainingInterrupted(RuntimeError):
    """Raised by :meth:`Trainer.run` when ``stop_after`` ends the run early (a simulated kill)."""


def dist_info() -> tuple[int, int]:
    """(rank, world_size), (0, 1) when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (once)."""
    if not dist.is_available() or dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device, not the model's
    dist.init_process_group(backend=backend)
    return True


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Swap ``tmp`` in for ``final`` so a kill while writing never leaves a half checkpoint behind."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _set_llm_gradient_checkpointing(model, enabled: bool) -> None:
    llm = getattr(getattr(model, "language", None), "llm", None)
    if llm is None:
        return
    # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_* (old names warn)
    disable = getattr(llm, "activation_checkpointing_disable", None) or llm.gradient_checkpointing_disable
    if enabled:
        # non-reentrant checkpointing works with inputs_embeds that require grad and with frozen layers
        kwargs = {"use_reentrant": False}
        if hasattr(llm, "activation_checkpointing_enable"):
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        llm.config.use_cache = False
    elif getattr(llm, "_pam_grad_ckpt", False):
        disable()
    llm._pam_grad_ckpt = enabled


class Trainer:
    """Runs phases of :class:`TrainingTask` on a model; see the module docstring.

    >>> trainer = Trainer(model, [Phase(task, steps=100, lr=1e-3, batch_size=8)], TrainerConfig("runs/x"))
    >>> trainer.run()          # resumes from runs/x/checkpoint when TrainerConfig(resume=True)

    Files under ``out_dir``: ``train_log.jsonl`` (rank 0), ``checkpoint/`` (latest checkpoint).
    """

    CHECKPOINT = "checkpoint"
    LOG = "train_log.jsonl"

    def __init__(self, model: nn.Module, phases: Sequence[Phase], config: TrainerConfig,
                 callbacks: Iterable[Callable[[dict[str, Any]], None]] = ()):
        self.model = model
        self.phases = list(phases)
        self.config = config
        self.callbacks = list(callbacks)
        self.out_dir = Path(config.out_dir)
        if config.device is not None:
            self.device = torch.device(config.device)
        else:
            self.device = next(model.parameters()).device
        self._owns_group = _maybe_init_distributed(self.device)
        self.rank, self.world_size = dist_info()
        self.precision = self._resolve_precision(config.precision)
        self.history: list[dict[str, Any]] = []  # every step record of this process (tests read it)
        self.global_step = 0
        self._touched: set[str] = set()  # names of parameters trained (or changed) so far
        self._log_fh = None

    # ------------------------------------------------------------------ helpers
    def _resolve_precision(self, precision: str) -> str:
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        if precision == "auto":
            if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
                return "bf16"
            return "fp32"
        return precision

    def _autocast(self):
        enabled = self.precision == "bf16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        if self._log_fh is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._log_fh = open(self.out_dir / self.LOG, "a", encoding="utf-8")
        self._log_fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._log_fh.flush()  # line-buffered so `tail -f` shows progress of long runs

    def _print(self, msg: str) -> None:
        if self.rank == 0 and not self.config.quiet:
            print(msg, file=sys.stderr, flush=True)

    def _named_params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dir(self) -> Path:
        return self.out_dir / self.CHECKPOINT

    def _save_checkpoint(self, phase_idx: int, phase_step: int, optimizer, scheduler) -> None:
        """Write (rank 0) weights + optimizer + scheduler + state, and every rank's RNG state."""
        final = self.checkpoint_dir()
        tmp = final.with_name(final.name + ".tmp")
        # every rank's RNG state travels through rank 0 (object all-gather), so the checkpoint is one folder
        rng = _rng_state()
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            params = self._named_params()
            names = sorted(n for n in self._touched if n in params)
            torch.save({n: params[n].detach().cpu().clone() for n in names}, tmp / "model.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(gathered, tmp / "rng.pt")
            state = {
                "phase": phase_idx,
                "phase_step": phase_step,
                "global_step": self.global_step,
                "seed": self.config.seed,
                "world_size": self.world_size,
                "touched": sorted(self._touched),
                "phases": [p.signature() for p in self.phases],
                "time": time.time(),
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
            _atomic_replace_dir(tmp, final)
            self._log({"event": "checkpoint", "phase": phase_idx, "phase_step": phase_step,
                       "global_step": self.global_step, "path": str(final)})
        if self.world_size > 1:
            dist.barrier()

    def _read_checkpoint_state(self) -> dict[str, Any] | None:
        path = self.checkpoint_dir() / "trainer_state.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        sigs = [p.signature() for p in self.phases]
        saved = state["phases"]
        # a finished run may be extended with more phases: its end is the phase boundary that an
        # uninterrupted run of the longer list passes through, so resuming there is still exact
        extends = (len(saved) < len(sigs) and sigs[: len(saved)] == saved
                   and state["phase"] == len(saved) and state["phase_step"] == 0)
        if saved != sigs and not extends:
            raise ValueError(
                f"cannot resume from {path.parent}: it was written for phases {state['phases']}, "
                f"this run has {sigs} (same recipe, steps and batch sizes are needed for an exact resume)"
            )
        if state["seed"] != self.config.seed:
            raise ValueError(f"cannot resume from {path.parent}: seed {state['seed']} != {self.config.seed}")
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"cannot resume from {path.parent}: it was written by {state['world_size']} process(es), "
                f"this run has {self.world_size} (the data shards would differ)"
            )
        return state

    def _load_rng(self) -> None:
        rngs = torch.load(self.checkpoint_dir() / "rng.pt", weights_only=False)
        _set_rng_state(rngs[self.rank])

    def _load_weights(self, state: dict[str, Any]) -> None:
        ckpt = self.checkpoint_dir()
        tensors = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
        params = self._named_params()
        missing = [n for n in tensors if n not in params]
        if missing:
            raise ValueError(f"checkpoint {ckpt} holds parameters the model does not have: {missing[:10]}")
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        self._touched |= set(state["touched"])
        self.global_step = int(state["global_step"])

    def _load_optimizer(self, optimizer, scheduler) -> None:
        ckpt = self.checkpoint_dir()
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=self.device, weights_only=False))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))

    # ------------------------------------------------------------------ distributed
    def _broadcast_model(self) -> None:
        """Start every rank from rank 0's weights (random inits may differ between processes)."""
        if self.world_size <= 1:
            return
        with torch.no_grad():
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(t.data, src=0)

    def _all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Average gradients over ranks. A parameter no rank produced a gradient for keeps ``None``
        (AdamW then leaves it alone, as in a single process); one that only some ranks touched counts
        as zero on the others."""
        if self.world_size <= 1:
            return
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        live = [p for p, h in zip(params, has.tolist()) if h > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not live:
            return
        flat = torch.cat([p.grad.reshape(-1).float() for p in live])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in live:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def _mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if self.world_size <= 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= self.world_size
        return dict(zip(keys, t.tolist()))

    # ------------------------------------------------------------------ main loop
    def _build_optimizer(self, phase: Phase, params: list[nn.Parameter]):
        # parameters with requires_grad False would never get a gradient; keep the list clean
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError(f"phase {phase.name!r}: the task returned no trainable parameter")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": phase.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=phase.lr, betas=phase.betas, eps=phase.eps)
        warm = phase.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, phase.steps, warm, phase.min_lr_ratio))
        return params, optimizer, scheduler

    def _prepare_phase(self, phase: Phase) -> list[nn.Parameter]:
        params = phase.task.trainable_parameters(self.model)
        self.model.to(self.device)  # a task may have added modules (LoRA) on the CPU
        return params

    def _finish_phase(self, phase: Phase) -> None:
        hook = getattr(phase.task, "finish_phase", None)
        if hook is not None:
            changed = hook(self.model) or []
            self._touched.update(changed)

    def run(self) -> dict[str, Any]:
        """Run (or resume) every phase. Returns a summary with the last loss of each phase."""
        cfg = self.config
        if cfg.flush_denormal:
            torch.set_flush_denormal(True)
        torch.manual_seed(derive_seed(cfg.seed, "torch", self.rank))
        random.seed(derive_seed(cfg.seed, "python", self.rank))
        np.random.seed(derive_seed(cfg.seed, "numpy", self.rank) % (2**32))
        self._broadcast_model()
        state = self._read_checkpoint_state() if cfg.resume else None
        if state is not None:
            start_phase, start_step = int(state["phase"]), int(state["phase_step"])
            self._print(f"[train] resuming from {self.checkpoint_dir()} at phase {start_phase} step {start_step}")
            self._log({"event": "resume", "phase": start_phase, "phase_step": start_step,
                       "global_step": state["global_step"]})
        else:
            start_phase, start_step = cfg.start_phase, 0
            if not 0 <= start_phase <= len(self.phases):
                raise ValueError(f"start_phase {start_phase} is outside the {len(self.phases)} phases of this run")
            if cfg.resume:
                self._print(f"[train] no checkpoint in {self.out_dir}; starting "
                            + (f"at phase {start_phase}" if start_phase else "from scratch"))
        summary: dict[str, Any] = {"phases": []}
        self.model.train()
        try:
            for pi, phase in enumerate(self.phases):
                if pi < start_phase:
                    # replay structural changes of finished phases (LoRA inject + merge); their weights
                    # come back with the checkpoint below
                    self._prepare_phase(phase)
                    self._finish_phase(phase)
                    continue
                first = start_step if pi == start_phase else 0
                last_metrics = self._run_phase(pi, phase, first, state if pi == start_phase else None)
                summary["phases"].append({"name": phase.name, **last_metrics})
                state = None
            if state is not None:
                # resumed a run whose every phase had finished: only the weights are needed
                self._load_weights(state)
                self._load_rng()
        finally:
            self.model.eval()
            _set_llm_gradient_checkpointing(self.model, False)
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
        return summary

    def _run_phase(self, pi: int, phase: Phase, first_step: int, state: dict[str, Any] | None) -> dict[str, Any]:
        cfg = self.config
        if state is not None:
            # RNG first: preparing a phase may draw random numbers (LoRA initialisation), and an
            # uninterrupted run draws them from the state reached at the end of the previous phase
            self._load_rng()
        params = self._prepare_phase(phase)
        params, optimizer, scheduler = self._build_optimizer(phase, params)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self._touched.update(names[id(p)] for p in params if id(p) in names)
        if state is not None:
            self._load_weights(state)
            if first_step > 0:
                # mid-phase: optimizer, schedule and the RNG state of that step. (A phase-boundary
                # checkpoint, step 0, holds placeholder optimizer states: the phase starts afresh.)
                self._load_optimizer(optimizer, scheduler)
                self._load_rng()
        _set_llm_gradient_checkpointing(self.model, cfg.gradient_checkpointing)
        n_train = sum(p.numel() for p in params)
        if first_step == 0:
            self._log({"event": "phase_start", "phase": pi, "name": phase.name, "steps": phase.steps,
                       "lr": phase.lr, "batch_size": phase.batch_size, "grad_accum": phase.grad_accum,
                       "world_size": self.world_size, "trainable_parameters": n_train,
                       "precision": self.precision})
        self._print(f"[train] phase {pi} '{phase.name}': steps {first_step}..{phase.steps}, "
                    f"{n_train:,} trainable parameters, batch {phase.batch_size}x{phase.grad_accum}x{self.world_size}")
        metrics: dict[str, float] = {}
        t_phase = time.perf_counter()
        for step in range(first_step, phase.steps):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for micro in range(phase.grad_accum):
                # the batch of micro-batch m of step s is batch number s*accum+m: a pure function of the step
                batch = phase.task.make_batch(step * phase.grad_accum + micro, self.rank, self.world_size,
                                              phase.batch_size, derive_seed(cfg.seed, "phase", pi))
                with self._autocast():
                    loss, m = phase.task.loss(self.model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"phase {phase.name!r} step {step}: loss is {loss.item()}")
                (loss / phase.grad_accum).backward()
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / phase.grad_accum
                for k, v in m.items():
                    if k != "loss":
                        sums[k] = sums.get(k, 0.0) + float(v) / phase.grad_accum
            self._all_reduce_grads(params)
            if phase.max_grad_norm is not None:
                with_grad = [p for p in params if p.grad is not None]
                grad_norm = float(torch.nn.utils.clip_grad_norm_(with_grad, phase.max_grad_norm)) if with_grad else 0.0
            else:
                grad_norm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            self.global_step += 1
            metrics = self._mean_over_ranks(sums)
            record = {"phase": pi, "name": phase.name, "step": step + 1, "steps": phase.steps,
                      "global_step": self.global_step, **metrics, "lr": lr, "grad_norm": grad_norm,
                      "seconds": round(time.perf_counter() - t0, 4)}
            self.history.append(record)
            if (step + 1) % max(1, cfg.log_every) == 0 or step + 1 == phase.steps:
                self._log(record)
            for cb in self.callbacks:
                cb(record)
            if cfg.print_every and ((step + 1) % cfg.print_every == 0 or step + 1 == phase.steps):
                elapsed = time.perf_counter() - t_phase
                rate = (step + 1 - first_step) / max(elapsed, 1e-9)
                eta = (phase.steps - step - 1) / max(rate, 1e-9)
                self._print(f"[train] {phase.name} {step + 1}/{phase.steps} loss {metrics['loss']:.4f} "
                            f"lr {lr:.2e} ({rate:.2f} steps/s, phase ETA {eta / 60:.1f} min)")
            done = step + 1 == phase.steps
            if not done and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                self._save_checkpoint(pi, step + 1, optimizer, scheduler)
            if cfg.stop_after is not None and self.global_step >= cfg.stop_after and not done:
                self._log({"event": "stopped", "global_step": self.global_step})
                raise TrainingInterrupted(f"stopped after {self.global_step} steps (stop_after)")
        self._finish_phase(phase)
        _set_llm_gradient_checkpointing(self.model, False)
        # a phase boundary is always a checkpoint: the next phase starts from a clean state. The next
        # phase's optimizer does not exist yet, so "phase pi+1, step 0" is stored with empty states.
        self._save_phase_boundary(pi + 1)
        self._log({"event": "phase_end", "phase": pi, "name": phase.name, "global_step": self.global_step,
                   "seconds": round(time.perf_counter() - t_phase, 2), **{f"last_{k}": v for k, v in metrics.items()}})
        if cfg.stop_after is not None and self.global_step >= cfg.stop_after and pi + 1 < len(self.phases):
            self._log({"event": "stopped", "global_step": self.global_step})
            raise TrainingInterrupted(f"stopped after {self.global_step} steps (stop_after)")
        return metrics

    def _save_phase_boundary(self, next_phase: int) -> None:
        # next_phase == len(phases) marks a finished run: resuming it only reloads the weights (so a
        # run killed while the caller saves the final model finishes at once when resumed)
        dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(dummy, lambda s: 1.0)
        self._save_checkpoint(next_phase, 0, dummy, sched)
