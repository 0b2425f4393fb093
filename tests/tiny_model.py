"""A tiny random PAM in this package's format, built on the fly (no download, no shared folder).

Random weights say nothing about what the model sees, so tests using it check behaviour that does
not depend on trained weights: shapes, plumbing, errors, memory, formats.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_pam(folder: Path, seed: int = 0, object_bias: float | None = None) -> Path:
    from perceive_anything.checkpoints import LoadedModel, save_pretrained
    from perceive_anything.config import pam_preset
    from perceive_anything.generation import GenerationSettings
    from perceive_anything.modeling.pam import PamModel
    from perceive_anything.training.tokenizer import build_shapes_tokenizer

    torch.manual_seed(seed)
    tok = build_shapes_tokenizer(vocab_size=2048, num_scenes=40)
    cfg = pam_preset("tiny-shapes")
    cfg.tokenizer_vocab_size = len(tok)
    model = PamModel(cfg).eval()
    if object_bias is not None:
        # Pin SAM's object-score head so every frame reads "object absent" (or present): exercises the
        # no-object paths (-1024 logits, empty masks, no-object memory) deterministically.
        last = model.segmenter.sam.mask_decoder.pred_obj_score_head.proj_out
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(object_bias)
    gen = GenerationSettings(max_new_tokens=8, eos_token_id=[tok.eos_token_id, tok.pad_token_id],
                             pad_token_id=tok.pad_token_id)
    save_pretrained(LoadedModel(model, tok, gen, "tiny-random", str(folder)), folder)
    return folder
