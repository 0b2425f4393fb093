"""Does ``torch.compile`` pay for PAM's LLM decoding on this machine?

Runs this package's decoding loop (``perceive_anything.generation.generate``, DynamicCache, greedy,
no EOS so every row produces ``--tokens`` tokens) on a prompt shaped like an image query (the chat
template of ``detailed_caption`` with one region's visual block spliced in), eagerly and with the
LLM's ``forward`` compiled by inductor (``dynamic=True``: the KV length grows every step, so static
shapes would recompile per step). ``--variants ours,hf-static`` also measures transformers' own
compiled decoding: ``Qwen2ForCausalLM.generate`` with ``cache_implementation="static"`` (a KV cache
preallocated to prompt + new tokens and a fixed-size 4-D mask, the layout transformers compiles its
decoding step for), eager (``disable_compile``) against compiled (``CompileConfig``, forced on the
CPU). Reports, per variant, model and batch size: the decode step time (median over the steps after
the first token), the whole ``generate`` time (prefill + decode), the first compiled call (a cold
compile: inductor's on-disk graph cache is off), the compiled steady state, and whether the tokens
agree with the eager ones.

Models: ``embedded`` (the package's tiny-shapes model), ``fixture`` (the public parity fixture's
LLM in ``../shared/golden``, skipped when absent), or a PAM folder.

    python benchmarks/compile_decode.py [--models embedded,fixture] [--rows 1,16] [--tokens 32]
        [--runs 5] [--threads 1] [--mode default] [--variants ours,hf-static] [--out benchmarks/results/compile_decode.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("PAM_SHARED_DIR") or HERE.parent.parent / "shared")
FIXTURE = SHARED / "golden" / "weights" / "pam_model"


def _load(name: str):
    """(language model, tokenizer) of ``name``."""
    if name == "embedded":
        from perceive_anything import PerceiveAnything

        pam = PerceiveAnything.from_pretrained()
        return pam.model.language, pam.tokenizer
    if name == "fixture":
        from perceive_anything.checkpoints.pam_official import load_official_pam

        loaded = load_official_pam(FIXTURE)
        return loaded.model, loaded.tokenizer
    from perceive_anything import PerceiveAnything

    pam = PerceiveAnything.from_pretrained(name)
    return pam.model.language, pam.tokenizer


def _inputs(lang, tokenizer, rows: int, seed: int = 0):
    """``rows`` copies of the detailed-caption prompt, each with its own random visual block."""
    import torch

    from perceive_anything.processing import text as text_proc

    ids = text_proc.tokenize_with_placeholder(tokenizer, text_proc.build_prompt("detailed_caption", "en"))
    g = torch.Generator().manual_seed(seed)
    nv = lang.config.image_tokens_per_region
    blocks = torch.randn(rows, nv, lang.hidden_size, generator=g, dtype=lang.dtype)
    embeds, mask, _ = lang.build_inputs_embeds(torch.tensor([ids] * rows), blocks)
    return embeds, mask


def _run(llm, embeds, mask, tokens: int, hf: dict | None = None) -> dict:
    """One ``generate`` (this package's, or transformers' with the ``hf`` keywords): total seconds,
    seconds to the first token, median seconds per step after it, the tokens."""
    stamps = []
    t0 = time.perf_counter()
    if hf is None:
        from perceive_anything.generation import GenerationSettings, generate

        ids = generate(llm, embeds, mask, GenerationSettings(max_new_tokens=tokens),
                       on_token=lambda ev: stamps.append(time.perf_counter())).sequences
    else:
        from transformers import LogitsProcessorList

        def stamp(input_ids, scores):
            stamps.append(time.perf_counter())
            return scores

        ids = llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                           do_sample=False, logits_processor=LogitsProcessorList([stamp]), **hf)
    total = time.perf_counter() - t0
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"total_s": total, "prefill_s": stamps[0] - t0, "step_s": statistics.median(steps), "ids": ids}


def measure(name: str, rows: int, tokens: int, runs: int, mode: str, variant: str) -> dict:
    import torch
    from transformers import CompileConfig

    lang, tokenizer = _load(name)
    llm = lang.llm
    embeds, mask = _inputs(lang, tokenizer, rows)
    torch._dynamo.reset()
    with torch.inference_mode():
        if variant == "ours":
            eager_forward = llm.forward
            eager = [_run(llm, embeds, mask, tokens) for _ in range(runs)]
            llm.forward = torch.compile(eager_forward, dynamic=True, mode=mode)
            try:
                first = _run(llm, embeds, mask, tokens)
                compiled = [_run(llm, embeds, mask, tokens) for _ in range(runs)]
            finally:
                llm.forward = eager_forward
            eager += [_run(llm, embeds, mask, tokens) for _ in range(runs)]  # drift of a shared machine
        else:
            config = CompileConfig(mode=mode)
            config._compile_all_devices = True  # transformers compiles on accelerators only unless told
            static = dict(cache_implementation="static")
            eager = [_run(llm, embeds, mask, tokens, dict(static, disable_compile=True)) for _ in range(runs)]
            first = _run(llm, embeds, mask, tokens, dict(static, compile_config=config))
            compiled = [_run(llm, embeds, mask, tokens, dict(static, compile_config=config)) for _ in range(runs)]
            eager += [_run(llm, embeds, mask, tokens, dict(static, disable_compile=True)) for _ in range(runs)]
    same = all(torch.equal(r["ids"], eager[0]["ids"]) for r in [first, *compiled])

    def best(rs, key):
        return round(min(r[key] for r in rs), 6)

    return {
        "variant": variant, "model": name, "rows": rows, "tokens": tokens, "mode": mode,
        "eager_step_ms": round(best(eager, "step_s") * 1e3, 3),
        "compiled_step_ms": round(best(compiled, "step_s") * 1e3, 3),
        "step_speedup": round(best(eager, "step_s") / best(compiled, "step_s"), 3),
        "eager_generate_s": best(eager, "total_s"),
        "compiled_generate_s": best(compiled, "total_s"),
        "eager_prefill_s": best(eager, "prefill_s"),
        "compiled_prefill_s": best(compiled, "prefill_s"),
        "first_compiled_generate_s": round(first["total_s"], 3),
        "calls_to_repay_compile": _calls_to_repay(first["total_s"], best(eager, "total_s"), best(compiled, "total_s")),
        "same_tokens": same,
    }


def _calls_to_repay(first: float, eager: float, compiled: float):
    """How many ``generate`` calls the compile costs before it is repaid (None: never)."""
    gain = eager - compiled
    return None if gain <= 0 else round((first - compiled) / gain, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="embedded,fixture", help="embedded, fixture or PAM folders, comma-separated")
    ap.add_argument("--rows", default="1,16", help="batch sizes, comma-separated")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per row")
    ap.add_argument("--runs", type=int, default=5, help="generate calls per variant (the minimum is kept)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", default="default", help="torch.compile mode")
    ap.add_argument("--variants", default="ours,hf-static", help="ours, hf-static or both, comma-separated")
    ap.add_argument("--out", default=str(HERE / "results" / "compile_decode.json"))
    a = ap.parse_args(argv)
    import platform

    import torch

    load_start = [round(v, 2) for v in os.getloadavg()]
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False  # time cold compiles, as a user's first run has them
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    results, skipped = [], []
    for name in [m for m in a.models.split(",") if m]:
        if name == "fixture" and not (FIXTURE / "config.json").is_file():
            skipped.append(f"fixture: {FIXTURE} not found")
            continue
        for variant in [v for v in a.variants.split(",") if v]:
            if variant not in ("ours", "hf-static"):
                ap.error(f"unknown variant {variant!r}; use ours or hf-static")
            for rows in [int(r) for r in a.rows.split(",") if r]:
                results.append(measure(name, rows, a.tokens, a.runs, a.mode, variant))
                print(results[-1], file=sys.stderr)
    report({
        "torch": torch.__version__, "threads": a.threads, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_average_start_end": [load_start, [round(v, 2) for v in os.getloadavg()]],
        "results": results, "skipped": skipped,
    }, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
