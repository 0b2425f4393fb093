"""Does the visual side of a PAM carry region content to the LLM?  A diagnostic for the embedded model.

    python benchmarks/grounding.py [--model DIR] [--regions 32]

On held-out shapes-world regions (box or click prompts, as in training) it measures, at every stage
of the visual path, the region-to-region variation ``std over regions / rms`` (0 = every region gets
the same tokens): SAM 2's mid image embedding and mid mask tokens, the perceiver's semantic and image
tokens, and both projector outputs. It also measures the LM loss of the label and brief-caption
answers with each region's own visual tokens and with another region's (``loss_real`` vs
``loss_rolled``): a model that reads its visual tokens has ``loss_rolled`` clearly above
``loss_real``. Prints one JSON object and writes it to ``benchmarks/results/grounding.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

RESULTS = Path(__file__).resolve().parent / "results" / "grounding.json"


def variation(x: torch.Tensor) -> float:
    x = x.reshape(x.shape[0], -1).float()
    return float(x.std(0).mean() / x.pow(2).mean().sqrt())


def run(model: str | None, regions: int, seed: int) -> dict:
    from perceive_anything.checkpoints import load_pretrained
    from perceive_anything.training.language import ShapesData, image_mids, heldout_seed, lm_loss, splice_right_padded

    loaded = load_pretrained(model)  # None: the embedded model
    pam, tok = loaded.model.eval(), loaded.tokenizer
    lang = pam.language
    data = ShapesData(kinds={"image": 1.0}, image_tasks=("label", "brief_caption"), languages=("en",))
    batch = data.make("image", random.Random(heldout_seed(seed, "grounding")), regions, tok, False)
    with torch.no_grad():
        embed, tokens = image_mids(pam, batch)
        sem, img = lang.perceiver(embed.to(lang.dtype), tokens.to(lang.dtype), lang.config.perceiver.image_shuffle)
        result = {
            "model": loaded.name,
            "regions": len(batch.items),
            "variation": {
                "mid_image_embed": variation(embed), "mid_mask_tokens": variation(tokens),
                "perceiver_sem_tokens": variation(sem), "perceiver_image_tokens": variation(img),
                "projected_sem_tokens": variation(lang.mm_projector_semT(sem)),
                "projected_image_tokens": variation(lang.mm_projector_img(img)),
            },
        }
        blocks = list(lang.image_visual_block(embed, tokens).unbind(0))  # what training splices in
        rows = [(it.ids, it.labels) for it in batch.items]
        for name, bl in (("loss_real", blocks), ("loss_rolled", blocks[1:] + blocks[:1])):
            embeds, mask, labels = splice_right_padded(lang, rows, bl)
            result[name] = float(lm_loss(lang.llm, embeds, mask, labels)[0])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model folder (default: the embedded tiny model)")
    ap.add_argument("--regions", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS), help="also write the JSON here")
    args = ap.parse_args(argv)
    result = run(args.model, args.regions, args.seed)
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
