"""Official PAM folder reading/writing on a tiny synthetic model (no shared fixtures needed)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from perceive_anything.checkpoints.pam_official import (
    from_official_state_dict,
    load_official_pam,
    official_config_json,
    pam_config_from_official,
    save_official_pam,
    to_official_pam_state_dict,
)
from perceive_anything.config import PamConfig, SegmenterConfig
from perceive_anything.modeling.language import PamLanguageModel

TOKENS = 40  # len(tokenizer)
ROWS = 48  # padded embedding rows in the file, like 151936 vs 151665


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(TOKENS - 3)}
    vocab.update({"<|endoftext|>": TOKENS - 3, "<|im_start|>": TOKENS - 2, "<|im_end|>": TOKENS - 1})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _config():
    llm = dict(vocab_size=ROWS, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
               hidden_act="silu", tie_word_embeddings=True)
    return PamConfig(segmenter=SegmenterConfig(image_size=256), llm=llm, tokenizer_vocab_size=TOKENS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = PamLanguageModel(_config()).eval()
    folder = tmp_path_factory.mktemp("pam_tiny")
    save_official_pam(model, folder, tokenizer=_tokenizer(),
                      generation_config={"eos_token_id": [TOKENS - 1, TOKENS - 3], "repetition_penalty": 1.05})
    return model, folder


def _copy(folder, tmp_path, edit_sd=None, edit_cfg=None):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    if edit_sd is not None:
        sd = load_file(str(dst / "model.safetensors"))
        edit_sd(sd)
        save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if edit_cfg is not None:
        cfg = json.loads((dst / "config.json").read_text())
        edit_cfg(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_round_trip(saved):
    model, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llava_qwen" and cfg["vocab_size"] == ROWS and cfg["mm_hidden_size"] == 256
    sd = load_file(str(folder / "model.safetensors"))
    assert sd["model.embed_tokens.weight"].shape == (ROWS, 32)
    assert "model.vision_resampler.pe_layer.positional_encoding_gaussian_matrix" in sd
    assert "model.mm_projector_img.2.weight" in sd and "model.frame_newline" in sd and "lm_head.weight" not in sd
    loaded = load_official_pam(folder)
    assert loaded.model.vocab_size == TOKENS
    assert loaded.model.perceiver.feature_size == 64  # default SAM size unless the caller says otherwise
    ref = model.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert loaded.generation.eos_token_id == [TOKENS - 1, TOKENS - 3]
    assert loaded.generation.repetition_penalty == 1.05 and not loaded.generation.do_sample
    again = to_official_pam_state_dict(loaded.model, vocab_size=ROWS)
    assert set(again) == set(sd)
    assert torch.equal(again["model.embed_tokens.weight"][:TOKENS], sd["model.embed_tokens.weight"][:TOKENS])


def test_segmenter_size_and_dtype(saved):
    _, folder = saved
    loaded = load_official_pam(folder, segmenter=SegmenterConfig(image_size=256), dtype=torch.bfloat16)
    assert loaded.model.perceiver.feature_size == 16
    assert loaded.model.image_newline.dtype == torch.bfloat16
    assert loaded.model.llm.model.rotary_emb.inv_freq.dtype == torch.float32
    assert loaded.model.llm.lm_head.weight is loaded.model.llm.model.embed_tokens.weight


def test_sharded_folder(saved, tmp_path):
    _, folder = saved
    dst = _copy(folder, tmp_path)
    sd = load_file(str(dst / "model.safetensors"))
    keys = sorted(sd)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in parts.items():
        save_file({k: sd[k] for k in ks}, str(dst / name), metadata={"format": "pt"})
    (dst / "model.safetensors").unlink()
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: n for n, ks in parts.items() for k in ks}}))
    loaded = load_official_pam(dst)
    assert loaded.model.vocab_size == TOKENS


def test_vision_tower_keys_ignored_and_lm_head_checked(saved, tmp_path):
    _, folder = saved

    def add(sd):
        sd["model.vision_tower.sam2_model_predictor.no_mem_embed"] = torch.zeros(1, 1, 256)
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()

    loaded = load_official_pam(_copy(folder, tmp_path, edit_sd=add))
    assert loaded.report.ignored_keys == ["model.vision_tower.sam2_model_predictor.no_mem_embed"]
    assert loaded.report.lm_head_in_file and loaded.report.lm_head_matches_embedding


def test_lm_head_mismatch_raises_or_warns():
    emb = torch.randn(ROWS, 8)
    sd = {"model.embed_tokens.weight": emb, "lm_head.weight": emb + 1}
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        from_official_state_dict(sd, TOKENS)
    with pytest.warns(UserWarning):
        out, rep = from_official_state_dict(sd, TOKENS, lm_head_mismatch="warn")
    assert rep.lm_head_matches_embedding is False and out["llm.model.embed_tokens.weight"].shape[0] == TOKENS
    with pytest.raises(ValueError, match="only 48 embedding rows"):
        from_official_state_dict({"model.embed_tokens.weight": emb}, ROWS + 1)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda sd: sd.pop("model.vision_resampler.proj.bias"), r"missing keys \(1\):\s+perceiver.proj.bias"),
        (lambda sd: sd.pop("model.semT_newline"), r"missing keys \(1\):\s+semT_newline"),
        (lambda sd: sd.__setitem__("model.extra_thing", torch.zeros(1)), r"unexpected keys(.|\n)*model.extra_thing"),
        (lambda sd: sd.__setitem__("model.layers.5.mlp.up_proj.weight", torch.zeros(1)),
         r"unexpected keys \(1\):\s+llm.model.layers.5.mlp.up_proj.weight"),
        (lambda sd: sd.__setitem__("model.mm_projector_semT.0.weight", torch.zeros(32, 128)),
         r"shape mismatches(.|\n)*mm_projector_semT.0.weight"),
    ],
)
def test_strict_loading_errors(saved, tmp_path, edit, match):
    _, folder = saved
    with pytest.raises(ValueError, match=match):
        load_official_pam(_copy(folder, tmp_path, edit_sd=edit))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c.__setitem__("mm_vision_tower", "openai/clip"), "must contain 'sam2'"),
        (lambda c: c.__setitem__("mm_projector_type", "linear"), "mlp2x_gelu"),
        (lambda c: c.__setitem__("mm_hidden_size", 1024), "mm_hidden_size"),
        (lambda c: c.__setitem__("model_type", "qwen2"), "llava_qwen"),
    ],
)
def test_config_validation(saved, edit, match):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        pam_config_from_official(cfg)


def test_config_json_round_trip():
    cfg = _config()
    official = official_config_json(cfg)
    back = pam_config_from_official(official, tokenizer_len=TOKENS)
    assert back.llm == cfg.llm
    assert back.tokenizer_vocab_size == TOKENS
    q = back.qwen2_config()
    assert q.vocab_size == TOKENS and q.rope_parameters["rope_theta"] == 10000.0
