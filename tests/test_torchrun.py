"""Data parallelism: two gloo processes (the environment torchrun sets up) end with identical weights."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

TESTS = str(Path(__file__).resolve().parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # exactly what torchrun exports; Trainer joins the group itself (gloo on CPU)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    sys.path.insert(0, TESTS)
    torch.set_num_threads(1)
    import torch.distributed as dist

    from perceive_anything.training.trainer import Phase, Trainer, TrainerConfig
    from trainer_toys import ToyTask, toy_model

    model = toy_model(seed=100 + rank)  # different inits on purpose: rank 0's weights are broadcast
    trainer = Trainer(model, [Phase(ToyTask(), steps=8, lr=1e-2, batch_size=4, grad_accum=2)],
                      TrainerConfig(out, seed=1, checkpoint_every=4, quiet=True))
    trainer.run()
    torch.save({"params": [p.detach() for p in model.parameters()],
                "losses": [h["loss"] for h in trainer.history]}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_stay_in_sync(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    # logged losses are averaged over ranks, so both ranks report the same numbers
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 8
    assert (tmp_path / "train_log.jsonl").is_file() and (tmp_path / "checkpoint" / "rng.pt").is_file()
    rngs = torch.load(tmp_path / "checkpoint" / "rng.pt", weights_only=False)
    assert len(rngs) == 2  # every rank's RNG state is in the checkpoint
