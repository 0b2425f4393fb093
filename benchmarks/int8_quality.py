"""What weight-only int8 of the LLM (``perceive_anything.quantization``) costs: token agreement with
float32, decode speed, LLM weight bytes.

Runs the same greedy queries twice in one process, float32 then int8 LLM (SAM 2, perceiver and
projectors stay float32): the parity fixture's image with the 16 boxes of ``speed.regions()``
(label, detailed caption; skipped without ``../shared/golden``) and the embedded tiny model on
held-out shapes-world scenes (label, brief caption). Reports per model: ``token_agreement`` (share
of positions where the int8 token equals the float32 token, over the longer of the two outputs),
``exact_outputs`` (share of outputs identical token for token), ``generate_s`` of both and the
decoder's linear-weight bytes. One JSON line, and ``benchmarks/results/int8_quality.json``.

    python benchmarks/int8_quality.py [--scenes 8] [--max-new-tokens 24] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script
from speed import CASE_A, GOLDEN, _manifest, regions

RESULTS = Path(__file__).resolve().parent / "results" / "int8_quality.json"


def _linear_weight_bytes(language) -> int:
    from torch import nn

    total = 0
    for m in language.llm.model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, nn.Linear) and w is not None:
            # quanto keeps int8 data + per-channel scales inside its weight tensor subclass
            data = getattr(w, "_data", w)
            scale = getattr(w, "_scale", None)
            total += data.numel() * data.element_size() + (0 if scale is None else scale.numel() * scale.element_size())
    return total


def _compare(pam, queries, gen: dict) -> dict:
    """Run ``queries`` (callables pam -> ImageResult) in float32, quantize, run again; compare tokens."""
    from perceive_anything.quantization import quantize_llm_int8

    def run():
        toks, secs = [], 0.0
        for q in queries:
            res = q(pam, gen)
            secs += res.timings.generate
            toks += [o.token_ids for r in res.regions for o in r.outputs]
        return toks, secs

    run()  # warm-up: first-call allocations are not the LLM's cost
    fp32, fp32_s = run()
    bytes_fp32 = _linear_weight_bytes(pam.model.language)
    quantize_llm_int8(pam.model.language)
    run()
    int8, int8_s = run()
    same = total = exact = 0
    for a, b in zip(fp32, int8):
        same += sum(x == y for x, y in zip(a, b))
        total += max(len(a), len(b))
        exact += a == b
    return dict(outputs=len(fp32), tokens=total, token_agreement=same / max(total, 1), exact_outputs=exact / max(len(fp32), 1),
                generate_s_float32=fp32_s, generate_s_int8=int8_s,
                decoder_linear_bytes_float32=bytes_fp32, decoder_linear_bytes_int8=_linear_weight_bytes(pam.model.language))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=8, help="held-out shapes scenes for the embedded model")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from perceive_anything import PerceiveAnything
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    gen = dict(do_sample=False, temperature=None, top_p=None, max_new_tokens=a.max_new_tokens)
    result: dict = dict(settings=dict(max_new_tokens=a.max_new_tokens, scenes=a.scenes, threads=torch.get_num_threads()))
    t0 = time.perf_counter()
    if (GOLDEN / "weights").is_dir():
        w = GOLDEN / "weights"
        pam = PerceiveAnything.from_pretrained(str(w / "pam_model"), sam2=str(w / "sam2" / "sam2.1_hiera_parity.pt"))
        image = str(GOLDEN / CASE_A / _manifest(CASE_A)["inputs"]["images"][0])
        enc = pam.encode(image)
        result["parity_fixture"] = _compare(pam, [
            lambda p, g: p.perceive(enc, regions(), task=["label", "detailed_caption"], **g)], gen)
    else:
        result["parity_fixture"] = "skipped: ../shared/golden is not here"
    scenes = [generate_scene(heldout_seed(i, "int8-scene"), size=256) for i in range(a.scenes)]
    pam = PerceiveAnything.from_pretrained()
    result["embedded_model"] = _compare(pam, [
        (lambda p, g, s=s: p.perceive(s.image, [list(o.box) for o in s.objects], task=["label", "brief_caption"], **g))
        for s in scenes], gen)
    result["seconds"] = time.perf_counter() - t0
    report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
