"""Every model shape is read from the checkpoint: random tiny configs written in the official formats
(tests/official_checkpoint.py), loaded back, converted, trained, and run on portrait/odd-sized frames,
odd video lengths and streams. Tied and untied LM heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from official_checkpoint import write_official_checkpoint
from perceive_anything.config import PamConfig, SegmenterConfig, hiera_channel_list

# three shapes unlike every preset: Hiera stages/widths/heads/global blocks/windows/positional sizes,
# memory depth and bank size, LLM depth/width/heads/KV heads/vocabulary, tied or not
SHAPES = {
    "gqa_tied": dict(
        seg=dict(embed_dim=8, num_heads=1, stages=[1, 2, 3, 1], global_att_blocks=[4, 5], window_spec=[8, 4, 8, 4],
                 window_pos_embed_bkg_spatial_size=[4, 4], memory_attention_num_layers=1,
                 memory_attention_dim_feedforward=128, num_maskmem=3),
        llm=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                 tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
    ),
    "mqa_untied": dict(
        seg=dict(embed_dim=16, num_heads=2, stages=[2, 1, 2, 2], global_att_blocks=[4, 6], window_spec=[4, 8, 8, 8],
                 window_pos_embed_bkg_spatial_size=[6, 6], memory_attention_num_layers=2,
                 memory_attention_dim_feedforward=96, num_maskmem=7),
        llm=dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                 tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-6),
    ),
    "mha_tied": dict(
        seg=dict(embed_dim=12, num_heads=3, stages=[1, 1, 3, 2], global_att_blocks=[3, 6], window_spec=[4, 4, 2, 2],
                 window_pos_embed_bkg_spatial_size=[3, 5], memory_attention_num_layers=1,
                 memory_attention_dim_feedforward=64, num_maskmem=4),
        llm=dict(hidden_size=40, intermediate_size=72, num_hidden_layers=1, num_attention_heads=5, num_key_value_heads=5,
                 tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-5),
    ),
}


@pytest.fixture(scope="module")
def tokenizer():
    from perceive_anything.training.tokenizer import build_shapes_tokenizer

    return build_shapes_tokenizer(vocab_size=600, num_scenes=20)


def _config(name: str, tok) -> PamConfig:
    spec = SHAPES[name]
    seg = SegmenterConfig(image_size=256, **spec["seg"],
                          backbone_channel_list=hiera_channel_list(spec["seg"]["embed_dim"], len(spec["seg"]["stages"])))
    llm = dict(spec["llm"], vocab_size=len(tok) + 13, max_position_embeddings=8192, hidden_act="silu",
               use_sliding_window=False, sliding_window=8192, attention_dropout=0.0)
    return PamConfig(segmenter=seg, llm=llm, tokenizer_vocab_size=len(tok))


@pytest.fixture(scope="module")
def written(tmp_path_factory, tokenizer):
    """name -> (config, reference model state dict, pam folder, sam2 .pt), built on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            from perceive_anything.modeling.pam import PamModel

            cfg = _config(name, tokenizer)
            root = tmp_path_factory.mktemp(name)
            pam_dir, pt = write_official_checkpoint(root, cfg, tokenizer, seed=3)
            torch.manual_seed(3)
            ref = PamModel(cfg).state_dict()
            cache[name] = (cfg, ref, pam_dir, pt)
        return cache[name]

    return get


def _portrait(w=97, h=131, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list(SHAPES))
def test_official_checkpoint_of_any_shape_loads_back_exactly(written, name):
    from perceive_anything.checkpoints import load_pretrained

    cfg, ref, pam_dir, pt = written(name)
    loaded = load_pretrained(pam_dir, sam2=pt)
    got = loaded.model.config
    assert got.segmenter == cfg.segmenter  # every Hiera / memory size from the yaml, none from a preset
    for k, v in cfg.llm.items():
        if k != "vocab_size":
            assert got.llm[k] == v, k
    assert got.llm["vocab_size"] == cfg.llm["vocab_size"] and got.tokenizer_vocab_size == cfg.tokenizer_vocab_size
    sd = loaded.model.state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        assert torch.equal(sd[k], v), k
    llm = loaded.model.language.llm
    tied = cfg.llm["tie_word_embeddings"]
    assert (llm.lm_head.weight.data_ptr() == llm.model.embed_tokens.weight.data_ptr()) == tied
    if not tied:  # the stored head is the one used, not the embedding
        assert not torch.equal(llm.lm_head.weight, llm.model.embed_tokens.weight)
        file_head = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(pam_dir / "model.safetensors"))["lm_head.weight"]
        assert file_head.shape[0] == cfg.llm["vocab_size"]  # padded like the embedding
        assert torch.equal(llm.lm_head.weight, file_head[: cfg.tokenizer_vocab_size])
        h = torch.randn(1, 3, cfg.hidden_size)
        assert torch.allclose(llm.lm_head(h), h @ file_head[: cfg.tokenizer_vocab_size].T, atol=1e-6)


def test_tied_checkpoint_with_a_different_stored_head_is_refused(written, tokenizer, tmp_path):
    from perceive_anything.checkpoints import load_pretrained

    cfg = _config("gqa_tied", tokenizer)
    pam_dir, pt = write_official_checkpoint(tmp_path, cfg, tokenizer, seed=4, head_noise=0.5)
    with pytest.raises(ValueError, match="lm_head.weight differs from model.embed_tokens.weight although config.json ties"):
        load_pretrained(pam_dir, sam2=pt)


def test_untied_config_without_head_or_without_the_flag(written, tmp_path):
    """An untied config needs its head; a config.json without the flag is untied (the Qwen2 default)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from perceive_anything.checkpoints import load_pretrained

    cfg, _, pam_dir, pt = written("mqa_untied")
    copy = tmp_path / "pam"
    shutil.copytree(pam_dir, copy)
    official = json.loads((copy / "config.json").read_text())
    del official["tie_word_embeddings"]
    (copy / "config.json").write_text(json.dumps(official))
    loaded = load_pretrained(copy, sam2=pt)
    assert loaded.model.config.llm["tie_word_embeddings"] is False
    sd = load_file(str(copy / "model.safetensors"))
    del sd["lm_head.weight"]
    save_file(sd, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="untied .* no lm_head.weight"):
        load_pretrained(copy, sam2=pt)


@pytest.mark.parametrize("name", ["mqa_untied", "gqa_tied"])
def test_convert_keeps_the_head_and_every_shape(written, name, tmp_path):
    from perceive_anything.checkpoints import load_pretrained
    from perceive_anything.checkpoints.pam_official import save_official_pam
    from perceive_anything.cli import main

    cfg, ref, pam_dir, pt = written(name)
    out = tmp_path / "native"
    assert main(["convert", str(pam_dir), "--sam2", str(pt), "--out", str(out)]) == 0
    native = load_pretrained(out)
    assert native.model.config.to_dict() == load_pretrained(pam_dir, sam2=pt).model.config.to_dict()
    sd = native.model.state_dict()
    for k, v in ref.items():
        assert torch.equal(sd[k], v), k
    llm = native.model.language.llm
    assert (llm.lm_head.weight.data_ptr() == llm.model.embed_tokens.weight.data_ptr()) == cfg.llm["tie_word_embeddings"]
    # and back to the official format: the untied head travels, a tied one is not written
    back = save_official_pam(native.model.language, tmp_path / "official_again", tokenizer=native.tokenizer)
    keys = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(back / "model.safetensors")))
    assert ("lm_head.weight" in keys) == (not cfg.llm["tie_word_embeddings"])


def test_training_output_keeps_an_untied_head(written, tmp_path):
    from perceive_anything.checkpoints import load_pretrained
    from perceive_anything.cli import main
    from perceive_anything.training.data import write_pam_records
    from perceive_anything.training.synthetic import generate_scene

    _, ref, pam_dir, pt = written("mqa_untied")
    native = tmp_path / "native"
    assert main(["convert", str(pam_dir), "--sam2", str(pt), "--out", str(native)]) == 0
    files = write_pam_records([generate_scene(s, size=96) for s in (1, 2)], tmp_path / "data", image_tasks=("label",))
    yaml = next(p for n, p in files.items() if n.endswith(".yaml"))
    out = tmp_path / "trained"
    assert main(["train", "--data", str(yaml), "--model", str(native), "--stage", "2", "--steps", "2",
                 "--batch-size", "1", "--grad-accum", "1", "--lr", "1e-2", "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "pam_config.json").read_text())
    assert meta["config"]["llm"]["tie_word_embeddings"] is False
    llm = load_pretrained(out).model.language.llm
    assert llm.lm_head.weight.data_ptr() != llm.model.embed_tokens.weight.data_ptr()
    head0, emb0 = ref["language.llm.lm_head.weight"], ref["language.llm.model.embed_tokens.weight"]
    assert not torch.equal(llm.lm_head.weight, head0)  # trained
    assert not torch.equal(llm.lm_head.weight, llm.model.embed_tokens.weight)
    assert llm.model.embed_tokens.weight.shape == emb0.shape


@pytest.mark.parametrize("name,frames", [("gqa_tied", 5), ("mqa_untied", 17), ("mha_tied", 9)])
def test_any_shape_runs_on_portrait_frames_and_odd_video_lengths(written, name, frames):
    from perceive_anything import PerceiveAnything

    _, _, pam_dir, pt = written(name)
    pam = PerceiveAnything.from_pretrained(pam_dir, sam2=pt)
    img = _portrait()
    res = pam.perceive(img, [{"points": [[40, 60], [50, 90], [80, 20]], "labels": [1, 1, 0]}, [10, 20, 70, 110]],
                       task="label", lang="zh", max_new_tokens=3)
    assert len(res) == 2 and all(r.mask.shape == (131, 97) for r in res)
    video = [np.asarray(_portrait(seed=t)) for t in range(frames)]
    out = pam.perceive_video(video, [[10, 20, 70, 110]], max_new_tokens=3)
    assert len(out[0].scores) == frames and out[0].mask(frames - 1).shape == (131, 97)


def test_streams_of_any_number_of_clips(written):
    from perceive_anything import PerceiveAnything

    _, _, pam_dir, pt = written("gqa_tied")
    pam = PerceiveAnything.from_pretrained(pam_dir, sam2=pt)
    video = [np.asarray(_portrait(83, 61, seed=t)) for t in range(16)]
    events = list(pam.perceive_stream(video, [[10, 10, 50, 50]], clip=4, max_new_tokens=2))
    assert [e.clip for e in events] == [0, 1, 2, 3]
    assert [(e.start_frame, e.end_frame) for e in events] == [(0, 3), (4, 7), (8, 11), (12, 15)]


@pytest.mark.parametrize("edit,says", [
    (("      self_attention:\n        rope_theta", "      self_attention:\n        num_heads: 2\n        rope_theta"),
     "self_attention.num_heads=2"),
    (("      embed_dim: 8\n", "      embed_dim: 8\n      head_mul: 1.0\n"), "trunk.head_mul=1.0"),
    (("      embed_dim: 8\n", "      embed_dim: 8\n      q_pool: 2\n"), "trunk.q_pool=2"),
    (("  num_maskmem: 3\n", "  num_maskmem: 3\n  use_multimask_token_for_obj_ptr: false\n"), "use_multimask_token_for_obj_ptr"),
])
def test_yaml_sizes_this_implementation_does_not_wire_are_refused(tokenizer, tmp_path, edit, says):
    from official_checkpoint import official_yaml

    from perceive_anything.checkpoints.sam2 import segmenter_config_from_official_yaml

    text = official_yaml(_config("gqa_tied", tokenizer).segmenter)
    assert edit[0] in text
    path = tmp_path / "sam2.1_hiera_x.yaml"
    path.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        segmenter_config_from_official_yaml(path)
