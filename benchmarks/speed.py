"""Speed and memory of PAM inference, side by side with the official code.

Three scenarios on the public parity fixtures (``../shared/golden``; skipped cleanly without them),
or on released checkpoints with ``--model/--sam2``:

* ``image1``: case A's image and box, detailed caption (one region);
* ``image16``: case A's image, the 16 boxes of ``regions()`` (the list of
  ``../shared/official/bench_official.py``), label;
* ``video20``: case C's 20 frames and box, video caption;
* ``image16x3`` (ours only, not in the default list): the 16 boxes with three tasks each (label,
  brief and detailed caption) in one call, where a region's visual block is prefilled once for its
  three tasks; the official code answers one task per call.

Greedy decoding, ``max_new_tokens`` 12 (the fixtures' settings; the checkpoint's repetition penalty
stays on as in the official call). Every scenario runs in a fresh process (so its peak RSS is its
own) and reports: ``load_s`` (checkpoint -> ready model), ``query_s`` (one per run; the summary
takes the minimum), ``decode_tokens_per_s`` (generated tokens per second after the first token,
all rows together), ``tracking_fps`` (video frames per second through SAM 2, decoding and
preprocessing included), ``peak_rss_mb`` and, on CUDA, ``cuda_peak_mb``, plus the texts.

With ``--official-python`` (a venv built by ``../shared/official/setup_env.sh``) the official code
runs the same scenarios in alternating processes (official, ours, official, ours, ...) and the
summary holds the ratios ours / official. Results: one JSON line on stdout and
``benchmarks/results/speed.json`` (``--out``).

    python benchmarks/speed.py [--scenarios image1,image16,video20] [--runs 3] [--rounds 1]
        [--official-python /tmp/official-venv/bin/python --official-dir /tmp/pam_official]
        [--model DIR --sam2 PT] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--llm-int8] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("PAM_SHARED_DIR") or HERE.parent.parent / "shared")
GOLDEN = SHARED / "golden"
CASE_A = "case_A_image_box_detailcap_en"
CASE_C = "case_C_video20_box_cap_en"
SCENARIOS = ("image1", "image16", "video20")
OURS_ONLY = ("image16x3",)
MULTI_TASKS = ("label", "brief_caption", "detailed_caption")
MAX_NEW_TOKENS = 12
# What each scenario must beat (ratio ours / official; image16 as a throughput multiple).
GOALS = {"image1_query": 0.5, "image16_throughput": 10.0, "video20_query": 0.35, "video20_peak_rss": 0.3, "load": 1.0}


def regions(n: int = 16, w: int = 320, h: int = 240) -> list[list[int]]:
    """The 16 boxes of the official benchmark (``regions()`` of ``bench_official.py``, same formula)."""
    out = []
    for i in range(n):
        cx, cy = i % 4, (i // 4) % 4
        x1 = 8 + cx * 74 + (i * 3) % 7
        y1 = 6 + cy * 56 + (i * 5) % 5
        out.append([x1, y1, min(x1 + 50 + (i * 7) % 20, w - 1), min(y1 + 40 + (i * 11) % 12, h - 1)])
    return out


def _manifest(case: str) -> dict:
    return json.loads((GOLDEN / case / "manifest.json").read_text())


def _box(vp) -> list[float]:
    """The fixtures' visual prompt is a flat xyxy box."""
    if len(vp) != 4:
        raise SystemExit(f"expected a box prompt in the fixture, got {vp}")
    return [float(v) for v in vp]


# ---------------------------------------------------------------------------------------------- worker


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_worker(a: argparse.Namespace) -> dict:
    """One scenario, ``a.runs`` times, in this process."""
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from perceive_anything import PerceiveAnything

    weights = GOLDEN / "weights"
    model = a.model or str(weights / "pam_model")
    sam2 = a.sam2 or (None if a.model else str(weights / "sam2" / "sam2.1_hiera_parity.pt"))
    t0 = time.perf_counter()
    pam = PerceiveAnything.from_pretrained(model, sam2=sam2, device=a.device, dtype=a.dtype)
    if a.llm_int8:
        from perceive_anything.quantization import quantize_llm_int8

        quantize_llm_int8(pam.model.language)
    if pam.device.type == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0

    # decode timing: every step event of the LLM, timestamped
    # (time, rows still generating, generate call): a query may make several calls (max_batch rows each)
    stamps: list[tuple[float, int, int]] = []
    calls = [0]
    lang = pam.model.language
    original_generate = lang.generate

    def timed_generate(*args, on_token=None, **kwargs):
        calls[0] += 1

        def cb(ev):
            stamps.append((time.perf_counter(), int(ev.active.sum()), calls[0]))
            if on_token is not None:
                on_token(ev)

        return original_generate(*args, on_token=cb, **kwargs)

    lang.generate = timed_generate
    gen = dict(do_sample=False, temperature=None, top_p=None, max_new_tokens=MAX_NEW_TOKENS)

    if a.worker in ("image1", "image16", "image16x3"):
        man = _manifest(CASE_A)
        image = str(GOLDEN / CASE_A / man["inputs"]["images"][0])
        if a.worker == "image1":
            boxes, tasks = [_box(man["inputs"]["visual_prompts"])], ["detailed_caption"]
        else:
            boxes, tasks = regions(), (["label"] if a.worker == "image16" else list(MULTI_TASKS))

        def query():
            res = pam.perceive(image, boxes, task=tasks, lang="en", **gen)
            return [o.text for r in res for o in r.outputs], res.timings
    else:
        man = _manifest(CASE_C)
        frames = [str(GOLDEN / CASE_C / f) for f in man["inputs"]["frames"]]
        box = _box(man["inputs"]["visual_prompts"])

        def query():
            res = pam.perceive_video(frames, [box], task="video_caption", lang="en", **gen)
            return [o.outputs[0].text for o in res.objects], res.timings

    if pam.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, decode, timings = [], [], []
    texts = None
    for _ in range(a.runs):
        stamps.clear()
        t0 = time.perf_counter()
        texts, tm = query()
        if pam.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        timings.append({k: round(v, 4) for k, v in tm.to_dict().items() if v is not None} if hasattr(tm, "to_dict") else {})
        # decoding only: from each call's first token to its last (a later call's prefill is not decoding)
        tokens = seconds = 0.0
        for call in sorted({c for _, _, c in stamps}):
            own = [(t, n) for t, n, c in stamps if c == call]
            tokens += sum(n for _, n in own[1:])
            seconds += own[-1][0] - own[0][0]
        if tokens:
            decode.append(tokens / max(seconds, 1e-9))
    out = dict(
        side="ours", scenario=a.worker, threads=torch.get_num_threads(), device=str(pam.device),
        dtype=str(pam.dtype).replace("torch.", ""), llm_int8=bool(a.llm_int8),
        load_s=load_s, query_s=times, decode_tokens_per_s=decode, timings=timings,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, texts=texts,
    )
    if a.worker == "video20":
        out["frames"] = len(frames)
        out["tracking_fps"] = [len(frames) / t["segment"] for t in timings if t.get("segment")]
    if pam.device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


# ---------------------------------------------------------------------------------------------- driver


def _run_json(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON from {' '.join(cmd[:3])}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _ours_cmd(a: argparse.Namespace, scenario: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", scenario, "--runs", str(a.runs),
           "--device", a.device, "--dtype", a.dtype]
    for flag in ("model", "sam2", "threads"):
        if getattr(a, flag):
            cmd += [f"--{flag}", str(getattr(a, flag))]
    if a.llm_int8:
        cmd.append("--llm-int8")
    return cmd


def _official_cmd(a: argparse.Namespace, scenario: str) -> tuple[list[str], dict]:
    script = SHARED / "official" / "bench_official.py"
    env = dict(os.environ, PAM_OFFICIAL_DIR=a.official_dir)
    env.pop("PYTHONPATH", None)  # the official venv must not see this package
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    return [a.official_python, str(script), scenario, "--runs", str(a.runs), "--attn", a.official_attn], env


def _summary(scenario: str, ours: list[dict], official: list[dict]) -> dict:
    def best(rows, key):
        vals = [v for r in rows for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        return min(vals) if vals else None

    s = {"ours_query_s": best(ours, "query_s"), "ours_load_s": best(ours, "load_s"),
         "ours_peak_rss_mb": max(r["peak_rss_mb"] for r in ours)}
    dec = [v for r in ours for v in r.get("decode_tokens_per_s", [])]
    if dec:
        s["ours_decode_tokens_per_s"] = max(dec)
    fps = [v for r in ours for v in r.get("tracking_fps", [])]
    if fps:
        s["ours_tracking_fps"] = max(fps)
    if any("cuda_peak_mb" in r for r in ours):
        s["ours_cuda_peak_mb"] = max(r.get("cuda_peak_mb", 0) for r in ours)
    if official:
        s.update(official_query_s=best(official, "query_s"), official_load_s=best(official, "load_s"),
                 official_peak_rss_mb=max(r["peak_rss_mb"] for r in official))
        s["query_ratio"] = s["ours_query_s"] / s["official_query_s"]
        s["throughput_x"] = s["official_query_s"] / s["ours_query_s"]
        s["load_ratio"] = s["ours_load_s"] / s["official_load_s"]
        s["peak_rss_ratio"] = s["ours_peak_rss_mb"] / s["official_peak_rss_mb"]
        s["same_texts_as_official"] = ours[-1]["texts"] == official[-1]["texts"]
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=3, help="queries per process (the summary takes the minimum)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating official/ours process pairs per scenario")
    ap.add_argument("--model", help="PAM folder or hub id (default: the parity fixture)")
    ap.add_argument("--sam2", help="SAM 2.1 .pt (default: the parity fixture's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's choice)")
    ap.add_argument("--llm-int8", action="store_true", help="weight-only int8 LLM (perceive_anything.quantization)")
    ap.add_argument("--official-python", help="python of a venv built by ../shared/official/setup_env.sh")
    ap.add_argument("--official-dir", default="/tmp/pam_official", help="PAM_OFFICIAL_DIR for the official side")
    ap.add_argument("--official-attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    ap.add_argument("--worker", choices=SCENARIOS + OURS_ONLY, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.runs < 1 or a.rounds < 1:
        ap.error("--runs and --rounds must be >= 1")
    if not a.model and not (GOLDEN / "weights").is_dir():
        print(f"skipped: the parity fixtures ({GOLDEN}) are not here; pass --model/--sam2", file=sys.stderr)
        return 0
    if a.model and not (GOLDEN / CASE_A).is_dir():
        print(f"skipped: the scenario inputs ({GOLDEN}) are not here", file=sys.stderr)
        return 0
    if a.worker:
        print(json.dumps(run_worker(a), ensure_ascii=False))
        return 0
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS + OURS_ONLY:
            ap.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS + OURS_ONLY)}")
    if a.official_python and a.model:
        ap.error("the official side runs the parity fixtures only; drop --model/--sam2 or --official-python")

    result = dict(
        machine=dict(cpu=_cpu_name(), cores=os.cpu_count(), python=platform.python_version()),
        settings=dict(runs=a.runs, rounds=a.rounds, device=a.device, dtype=a.dtype, threads=a.threads,
                      llm_int8=a.llm_int8, max_new_tokens=MAX_NEW_TOKENS,
                      model=a.model or "parity fixture", official_attn=a.official_attn if a.official_python else None),
        load_average_start=_load_average(), scenarios={}, goals=GOALS,
    )
    for s in scenarios:
        ours, official = [], []
        for _ in range(a.rounds):
            if a.official_python and s not in OURS_ONLY:
                cmd, env = _official_cmd(a, s)
                official.append(_run_json(cmd, env))
                print(f"official {s}: {official[-1]['query_s']}", file=sys.stderr)
            ours.append(_run_json(_ours_cmd(a, s)))
            print(f"ours {s}: {ours[-1]['query_s']}", file=sys.stderr)
        result["scenarios"][s] = dict(summary=_summary(s, ours, official), ours=ours, official=official)
    result["load_average_end"] = _load_average()
    report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
