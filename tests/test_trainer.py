"""Trainer mechanics (toy task) and PAM's language stages on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from perceive_anything.training.trainer import (
    Phase,
    TaskMix,
    Trainer,
    TrainerConfig,
    TrainingInterrupted,
    cosine_with_warmup,
)
from trainer_toys import ToyTask, toy_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread is faster, and with other processes on the machine several OpenMP
    # threads per process slow each step down by an order of magnitude
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _phases():
    return [Phase(ToyTask("first"), steps=5, lr=3e-2, batch_size=8, name="a"),
            Phase(ToyTask("all"), steps=6, lr=1e-2, batch_size=8, grad_accum=2, name="b")]


def _run(tmp, stop_after=None, resume=False, checkpoint_every=2):
    model = toy_model()
    trainer = Trainer(model, _phases(), TrainerConfig(tmp, seed=3, checkpoint_every=checkpoint_every, resume=resume,
                                                     stop_after=stop_after, quiet=True))
    try:
        trainer.run()
    except TrainingInterrupted:
        pass
    return model, trainer.history


def test_schedule_warmup_then_cosine():
    lrs = [cosine_with_warmup(s, 10, 2) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] > 0


def test_loss_falls_and_log_is_jsonl(tmp_path):
    model = toy_model()
    trainer = Trainer(model, [Phase(ToyTask(), steps=60, lr=3e-2, batch_size=16)],
                      TrainerConfig(tmp_path, checkpoint_every=0, quiet=True))
    trainer.run()
    losses = [h["loss"] for h in trainer.history]
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "phase_start"
    steps = [x for x in lines if "step" in x and "event" not in x]
    assert len(steps) == 60 and {"loss", "lr", "grad_norm", "seconds"} <= set(steps[0])


@pytest.mark.parametrize("stop_after", [3, 7])  # inside phase a (between checkpoints); inside phase b
def test_exact_resume_after_kill(tmp_path, stop_after):
    ref_model, ref = _run(tmp_path / "ref")
    _, first = _run(tmp_path / "run", stop_after=stop_after)
    assert len(first) == stop_after
    model, rest = _run(tmp_path / "run", resume=True)
    # the resumed run restarts at the last checkpoint (every 2 steps or a phase end) and redoes what the kill lost
    resumed_from = rest[0]["global_step"] - 1
    assert resumed_from <= stop_after
    by_step = {h["global_step"]: h["loss"] for h in ref}
    for h in rest:
        assert h["loss"] == by_step[h["global_step"]], h  # bit-identical, not just close
    assert rest[-1]["global_step"] == ref[-1]["global_step"]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


def test_resume_of_finished_run_only_reloads(tmp_path):
    ref_model, _ = _run(tmp_path)
    model, rest = _run(tmp_path, resume=True)
    assert rest == []
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


def test_resume_refuses_other_recipe(tmp_path):
    _run(tmp_path, stop_after=3)
    model = toy_model()
    phases = [Phase(ToyTask("first"), steps=9, lr=3e-2, batch_size=8, name="a")]
    with pytest.raises(ValueError, match="cannot resume"):
        Trainer(model, phases, TrainerConfig(tmp_path, seed=3, resume=True, quiet=True)).run()


def test_finished_run_extended_with_a_phase_resumes_exactly(tmp_path):
    def phases(extra):
        return _phases() + ([Phase(ToyTask("all"), steps=4, lr=5e-3, batch_size=8, name="c")] if extra else [])

    def run(out, extra, resume=False):
        model = toy_model()
        trainer = Trainer(model, phases(extra), TrainerConfig(out, seed=3, checkpoint_every=2, resume=resume, quiet=True))
        trainer.run()
        return model, trainer.history

    ref_model, ref = run(tmp_path / "ref", extra=True)
    run(tmp_path / "run", extra=False)
    model, rest = run(tmp_path / "run", extra=True, resume=True)
    assert [h["name"] for h in rest] == ["c"] * 4  # only the new phase runs
    assert [h["loss"] for h in rest] == [h["loss"] for h in ref[-4:]]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    # an unfinished run is not "extended": its phases must match
    _run(tmp_path / "killed", stop_after=3)
    with pytest.raises(ValueError, match="cannot resume"):
        Trainer(toy_model(), phases(True), TrainerConfig(tmp_path / "killed", seed=3, resume=True, quiet=True)).run()


def test_start_phase_continues_from_a_model_that_ran_the_earlier_phases(tmp_path):
    """A model made by phase a alone, continued at phase b, ends exactly where one uninterrupted
    run of a + b ends: phase b keeps its own data seed and schedule. (Exact for phases that draw no
    random numbers of their own, as the shapes recipe's: the toy's dropout is off here.)"""
    def model_without_dropout():
        model = toy_model()
        model[2].p = 0.0
        return model

    ref_model = model_without_dropout()
    ref = Trainer(ref_model, _phases(), TrainerConfig(tmp_path / "ref", seed=3, quiet=True))
    ref.run()
    model = model_without_dropout()
    Trainer(model, _phases()[:1], TrainerConfig(tmp_path / "a", seed=3, checkpoint_every=0, quiet=True)).run()
    trainer = Trainer(model, _phases(), TrainerConfig(tmp_path / "b", seed=3, quiet=True, start_phase=1))
    trainer.run()
    assert [h["name"] for h in trainer.history] == ["b"] * 6
    assert [h["loss"] for h in trainer.history] == [h["loss"] for h in ref.history if h["name"] == "b"]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="start_phase 3 is outside the 2 phases"):
        Trainer(toy_model(), _phases(), TrainerConfig(tmp_path / "c", quiet=True, start_phase=3)).run()


def test_phase_trains_only_its_parameters(tmp_path):
    model = toy_model()
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(model, [Phase(ToyTask("first"), steps=3, lr=1e-2, batch_size=4)],
            TrainerConfig(tmp_path, checkpoint_every=0, quiet=True)).run()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert changed == [True, True, False, False]


def test_task_mix_draws_by_step_and_uses_task_batch():
    mix = TaskMix([(ToyTask("first"), 1.0, 3), (ToyTask("all"), 1.0)])
    picks = [mix.choose(s, 0) for s in range(200)]
    assert 60 < sum(picks) < 140
    assert picks == [mix.choose(s, 0) for s in range(200)]
    for s in range(10):
        i, (x, _) = mix.make_batch(s, 0, 1, 5, 0)
        assert x.shape[0] == (3 if i == 0 else 5)


# ----------------------------------------------------------------------------------------------
# language stages


@pytest.fixture(scope="module")
def tok():
    from perceive_anything.training.tokenizer import build_shapes_tokenizer

    return build_shapes_tokenizer(num_scenes=60)


def _tiny(tok, seed=0):
    from perceive_anything.config import pam_preset
    from perceive_anything.modeling.pam import PamModel

    torch.manual_seed(seed)
    cfg = pam_preset("tiny-shapes")
    cfg.tokenizer_vocab_size = len(tok)
    return PamModel(cfg)


def test_sequence_matches_inference_prompt_and_masking_both_ways(tok):
    from perceive_anything.processing import text as tp
    from perceive_anything.training.language import IGNORE_INDEX, build_training_sequence

    turns = [("human", tp.task_prompt("brief_caption", "en")), ("gpt", "A red circle.")]
    ids, clean = build_training_sequence(tok, turns)
    prompt = tp.tokenize_with_placeholder(tok, tp.build_prompt("brief_caption", "en"))
    assert ids[: len(prompt)] == prompt  # training rows start exactly like inference prompts
    answer = tok("A red circle.", add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert [i for i, lab in zip(ids, clean) if lab != IGNORE_INDEX] == answer
    assert all(lab == IGNORE_INDEX for lab in clean[: len(prompt)])

    ids2, official = build_training_sequence(tok, turns, official_label_masking=True)
    assert ids2 == ids
    nl = tok("\n", add_special_tokens=False).input_ids[0]
    specials = {tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>"), nl}
    header = tok("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    for k, (i, lab) in enumerate(zip(ids, official)):
        if k >= len(prompt) - len(header):
            assert lab == i  # the whole assistant message, header and trailing newline included
        else:
            assert lab == (i if i in specials else IGNORE_INDEX)  # the official quirk in system/user turns
    assert sum(lab != IGNORE_INDEX for lab in official) > sum(lab != IGNORE_INDEX for lab in clean) + 8


def test_stage_trainable_parameters(tok):
    from perceive_anything.training.language import LanguageTask

    model = _tiny(tok)
    lang = model.language
    for stage in ("1", "1.5"):
        params = {id(p) for p in LanguageTask(stage, tokenizer=tok).trainable_parameters(model)}
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        assert {id(p) for p in model.parameters() if p.requires_grad} == params
        assert all(n.startswith(("language.perceiver", "language.mm_projector", "language.image_newline",
                                 "language.semT_newline", "language.frame_newline")) for n in names)
        assert lang.frame_newline.requires_grad and not any(p.requires_grad for p in lang.llm.parameters())
    LanguageTask("2", tokenizer=tok).trainable_parameters(model)
    assert all(p.requires_grad for p in lang.parameters())
    assert not any(p.requires_grad for p in model.segmenter.parameters())
    with pytest.raises(ValueError):
        LanguageTask("3", tokenizer=tok)


def test_language_stage2_loss_falls_and_resumes_exactly(tok, tmp_path):
    from perceive_anything.training.language import LanguageTask, ShapesData

    def run(out, stop_after=None, resume=False, steps=10):
        model = _tiny(tok)
        task = LanguageTask("2", ShapesData(kinds={"image": 1.0}, image_tasks=("label",), languages=("en",)),
                            tokenizer=tok)
        tr = Trainer(model, [Phase(task, steps=steps, lr=3e-3, batch_size=4, warmup=0)],
                     TrainerConfig(out, checkpoint_every=4, stop_after=stop_after, resume=resume, quiet=True))
        try:
            tr.run()
        except TrainingInterrupted:
            pass
        return model, tr.history

    model, ref = run(tmp_path / "ref")
    losses = [h["loss"] for h in ref]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    run(tmp_path / "k", stop_after=6)
    model2, rest = run(tmp_path / "k", resume=True)
    assert rest[0]["global_step"] == 5
    assert [h["loss"] for h in rest] == losses[4:]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_region_word_alignment(tok):
    from perceive_anything.training.language import LanguageTask, ShapesData

    data = ShapesData(kinds={"image": 1.0}, image_tasks=("label",), languages=("en",))
    with pytest.raises(ValueError, match="shapes data"):
        LanguageTask("1", [], tokenizer=tok, align_weight=1.0)
    model = _tiny(tok)
    task = LanguageTask("1", data, tokenizer=tok, align_weight=1.0)
    plain = LanguageTask("1", data, tokenizer=tok)
    params = task.trainable_parameters(model)
    batch = task.make_batch(0, 0, 1, 6, seed=0)
    with torch.no_grad():
        loss, m = task.loss(model, batch)
        lm_only, m_plain = plain.loss(model, batch)
    assert "loss_align" in m and "loss_align" not in m_plain
    assert float(loss) == pytest.approx(float(lm_only) + m["loss_align"], rel=1e-5)
    # the alignment moves the semantic tokens towards the region's shape and colour words
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(25):
        blocks = task.visual_blocks(model, batch)
        align, metrics = task.alignment_loss(model, batch, blocks)
        opt.zero_grad()
        align.backward()
        opt.step()
    assert metrics["loss_align"] < 0.5 * m["loss_align"], (m, metrics)
    assert metrics["align_acc_shape"] == 1.0 and metrics["align_acc_color"] == 1.0
    assert all(p.grad is None for p in model.language.llm.parameters())  # stage 1: the LLM stays frozen


def test_video_and_stream_batches(tok):
    from perceive_anything.training.language import LanguageTask, ShapesData

    model = _tiny(tok)
    task = LanguageTask("1.5", ShapesData(kinds={"stream": 1.0}, video_frames=4), tokenizer=tok)
    task.trainable_parameters(model)
    batch = task.make_batch(0, 0, 1, 2, 0)
    assert batch.kind == "video" and len(batch) == 1 and len(batch.sources[0]) == 4
    loss, metrics = task.loss(model, batch)
    loss.backward()
    assert model.language.frame_newline.grad is not None and model.language.llm.lm_head.weight.grad is None
    # deterministic in (seed, step, rank), different across ranks
    again = task.make_batch(0, 0, 1, 2, 0)
    assert again.items[0].ids == batch.items[0].ids
    other = task.make_batch(0, 1, 2, 2, 0)
    assert not all((a == b).all() for a, b in zip(other.sources[0], batch.sources[0]))


def test_lora_stage2_trains_adapters_and_merges(tok, tmp_path):
    pytest.importorskip("peft")
    from perceive_anything.training.language import LanguageTask, ShapesData

    model = _tiny(tok)
    base = {n: p.detach().clone() for n, p in model.language.llm.named_parameters()}
    task = LanguageTask("2", ShapesData(kinds={"image": 1.0}), tokenizer=tok, lora=True)
    params = task.trainable_parameters(model)
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora_names and not any(p.requires_grad for n, p in model.language.llm.named_parameters() if "lora_" not in n)
    assert len(params) == sum(p.requires_grad for p in model.parameters())
    Trainer(model, [Phase(task, steps=3, lr=1e-2, batch_size=2, warmup=0)],
            TrainerConfig(tmp_path, checkpoint_every=0, quiet=True)).run()
    # merged: plain module names again, and the attention weights moved
    names = dict(model.language.llm.named_parameters())
    assert set(names) == set(base)
    assert not torch.equal(names["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(names["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    # the merged model saves and loads in the package format
    from perceive_anything import PerceiveAnything
    from perceive_anything.checkpoints import LoadedModel, save_pretrained
    from perceive_anything.generation import GenerationSettings

    save_pretrained(LoadedModel(model, tok, GenerationSettings(max_new_tokens=2), "t", ""), tmp_path / "m")
    PerceiveAnything.from_pretrained(tmp_path / "m")


def test_gradient_checkpointing_and_bf16_flags(tok, tmp_path):
    from perceive_anything.training.language import LanguageTask, ShapesData

    def run(out, **kw):
        model = _tiny(tok)
        task = LanguageTask("2", ShapesData(kinds={"image": 1.0}), tokenizer=tok)
        tr = Trainer(model, [Phase(task, steps=2, lr=1e-3, batch_size=2, warmup=0)],
                     TrainerConfig(out, checkpoint_every=0, quiet=True, **kw))
        tr.run()
        return [h["loss"] for h in tr.history]

    plain = run(tmp_path / "a")
    ckpt = run(tmp_path / "b", gradient_checkpointing=True)
    assert ckpt == pytest.approx(plain, rel=1e-5)
    bf16 = run(tmp_path / "c", precision="bf16")  # CPU autocast: runs, close to fp32
    assert bf16 == pytest.approx(plain, rel=0.05)
