"""``pam train --recipe shapes`` end to end at a tiny scale, then loading the result."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_pam_train_shapes_recipe_tiny(tmp_path, capsys):
    from perceive_anything import PerceiveAnything
    from perceive_anything.cli import main

    out = tmp_path / "model"
    assert main(["train", "--recipe", "shapes", "--out", str(out), "--steps-scale", "0.002", "--quiet",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"saved": str(out)}
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    names = [x["name"] for x in log if x.get("event") == "phase_start"]
    assert names == ["sam-image", "sam-image+video", "language-stage1", "language-stage1.5", "language-stage2",
                     "language-stage2-grounding", "language-stage2-refresh", "sam-exit-head"]
    pam = PerceiveAnything.from_pretrained(out)
    res = pam.perceive(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(), [[4, 4, 40, 40]], task="label",
                       max_new_tokens=3)
    assert res.regions[0].mask.shape == (64, 64)
    # resuming a finished run only reloads the weights and saves again
    assert main(["train", "--recipe", "shapes", "--out", str(out), "--steps-scale", "0.002", "--quiet", "--resume"]) == 0

    # a model folder continued at its last phase: only that phase runs, and it trains SAM 2's
    # object-score head alone
    more = tmp_path / "more"
    assert main(["train", "--recipe", "shapes", "--out", str(more), "--steps-scale", "0.002", "--quiet",
                 "--init-from", str(out), "--start-phase", "sam-exit-head"]) == 0
    log = [json.loads(x) for x in (more / "train_log.jsonl").read_text().splitlines()]
    assert [x["name"] for x in log if x.get("event") == "phase_start"] == ["sam-exit-head"]
    before = PerceiveAnything.from_pretrained(out).model.state_dict()
    after = PerceiveAnything.from_pretrained(more).model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(".pred_obj_score_head." in k for k in changed), changed


def test_pam_train_needs_recipe_or_data(tmp_path, capsys):
    from perceive_anything.cli import main

    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "--recipe shapes" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--recipe", "shapes", "--lr", "1e-3", "--lora"], ["--lr, --lora", "only for --data"]),
    (["--recipe", "shapes", "--data", "d.yaml"], ["not both"]),
    (["--data", "d.yaml", "--model", "tiny-shapes", "--steps-scale", "0.1"], ["--steps-scale", "only for --recipe"]),
    (["--data", "d.yaml", "--model", "tiny-shapes", "--skip-segmenter"], ["--skip-segmenter"]),
    (["--recipe", "shapes", "--device", "gpu0"], ["--device 'gpu0'", "not a device name"]),
    (["--recipe", "shapes", "--start-phase", "sam-exit-head"], ["--init-from, --start-phase) go together"]),
    (["--recipe", "shapes", "--init-from", "x", "--start-phase", "warm-up"], ["'warm-up' is not a phase", "sam-exit-head"]),
    (["--data", "d.yaml", "--model", "tiny-shapes", "--start-phase", "x"], ["--start-phase", "only for --recipe"]),
    (["--recipe", "shapes", "--init-from", "no/such/folder", "--start-phase", "sam-exit-head"],
     ["model folder not found: no/such/folder"]),
    # without CUDA "no cuda device", with it "has N CUDA device(s)": refused either way
    (["--recipe", "shapes", "--device", "cuda:99"], ["--device 'cuda:99'"]),
])
def test_pam_train_refuses_options_it_would_ignore(tmp_path, capsys, argv, says):
    """An option the chosen mode does not read, or a device this machine lacks, is an error naming it,
    raised before anything is written."""
    from perceive_anything.cli import main

    out = tmp_path / "model"
    assert main(["train", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert all(s in err for s in says), err
    assert not out.exists()


def test_pam_train_on_pam_data_records(tmp_path, capsys):
    """``pam train --data`` on records in the official format (written by the synthetic exporter)."""
    from perceive_anything import PerceiveAnything
    from perceive_anything.cli import main
    from perceive_anything.training.data import write_pam_records
    from perceive_anything.training.synthetic import generate_scene, generate_video

    data = tmp_path / "data"
    samples = [generate_scene(s, size=128) for s in (1, 2)] + [generate_video(3, num_frames=4, size=128)]
    files = write_pam_records(samples, data, image_tasks=("label", "briefCap"))
    yaml = next(p for n, p in files.items() if n.endswith(".yaml"))
    out = tmp_path / "model"
    rc = main(["train", "--data", str(yaml), "--model", "tiny-shapes", "--stage", "2", "--steps", "3",
               "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-3", "--out", str(out), "--quiet"])
    assert rc == 0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [x for x in log if "event" not in x]
    assert len(steps) == 3 and all(x["loss"] > 0 for x in steps)
    PerceiveAnything.from_pretrained(out)
