"""Small tasks for trainer tests: a regression MLP whose forward uses dropout, so an exact resume
also needs the RNG states restored. Importable by spawned worker processes (test_torchrun)."""

from __future__ import annotations

import torch
from torch import nn

from perceive_anything.training.trainer import derive_seed


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 1))


class ToyTask:
    """Regression of a fixed random linear map; ``part`` "first" trains layer 0 only, "all" everything."""

    def __init__(self, part: str = "all", name: str | None = None):
        self.part = part
        self.name = name or f"toy-{part}"
        self.w = torch.linspace(-1.0, 1.0, 4)[:, None]

    def trainable_parameters(self, model):
        model.requires_grad_(False)
        params = list(model[0].parameters()) if self.part == "first" else list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        return params

    def make_batch(self, step, rank, world_size, batch_size, seed):
        g = torch.Generator().manual_seed(derive_seed(seed, step, rank))
        x = torch.randn(batch_size, 4, generator=g)
        return x, x @ self.w

    def loss(self, model, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}
