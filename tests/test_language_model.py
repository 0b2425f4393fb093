"""PamLanguageModel on a tiny random configuration: visual blocks, splicing, batching, capture."""

import pytest
import torch

from perceive_anything.config import PamConfig, SegmenterConfig
from perceive_anything.generation import GenerationSettings
from perceive_anything.modeling.language import IMAGE_TOKEN_INDEX, PamLanguageModel, pad_token_rows

H = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    llm = dict(vocab_size=80, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=True)
    cfg = PamConfig(segmenter=SegmenterConfig(image_size=256), llm=llm, tokenizer_vocab_size=70)
    m = PamLanguageModel(cfg).eval()
    with torch.no_grad():
        m.llm.model.embed_tokens.weight.mul_(10.0)
    return m


def _features(n, seed, f=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 256, f, f, generator=g), torch.randn(n, 2, 256, generator=g)


def test_sizes_follow_config(model):
    assert model.vocab_size == 70 and model.llm.lm_head.weight is model.llm.model.embed_tokens.weight
    assert model.perceiver.feature_size == 16
    embed, tokens = _features(3, 0)
    with torch.no_grad():
        block = model.image_visual_block(embed, tokens)
    assert block.shape == (3, model.config.image_tokens_per_region, H) == (3, 64 + 18, H)
    assert torch.equal(block[1, 64], model.image_newline.detach())
    assert torch.equal(block[1, 81], model.semT_newline.detach())


def test_video_block_and_capture_names(model):
    frames = [tuple(x[i : i + 1] for x in _features(3, 1)) for i in range(3)]
    with model.capturing() as cap, torch.no_grad():
        block = model.video_visual_block(frames, [True, False, False], [0, 4, 7])
    assert block.shape == (model.config.frame_tokens(True) + 2 * model.config.frame_tokens(False), H)
    assert block.shape[0] == (64 + 19) + 2 * (16 + 19)
    assert torch.equal(block[64 + 18], model.frame_newline.detach())
    assert set(cap) == {f"{fam}.frame{i:03d}.{w}" for i in (0, 4, 7)
                        for fam, w in (("perceiver", "sem_tokens"), ("perceiver", "image_tokens"),
                                       ("projector", "sem"), ("projector", "image"))}
    assert cap["perceiver.frame004.image_tokens"].shape == (1, 16, 1024)
    assert cap["projector.frame000.image"].shape == (1, 64, H)
    assert model._capture is None


def test_build_inputs_embeds_single_row(model):
    ids = torch.tensor([[5, 6, IMAGE_TOKEN_INDEX, 7, 8, 9]])
    vis = torch.randn(1, 4, H)
    emb, mask, vmask = model.build_inputs_embeds(ids, vis)
    table = model.llm.get_input_embeddings().weight.detach()
    expected = torch.cat([table[[5, 6]], vis[0], table[[7, 8, 9]]])
    assert torch.equal(emb[0], expected)
    assert mask.tolist() == [[1] * 9]
    assert vmask[0].tolist() == [False] * 2 + [True] * 4 + [False] * 3


def test_build_inputs_embeds_left_pads_rows_of_different_lengths(model):
    rows = [[1, IMAGE_TOKEN_INDEX, 2, 3], [4, 5, 6, IMAGE_TOKEN_INDEX, 7]]
    ids, am = pad_token_rows(rows, pad_id=0)
    assert ids.tolist() == [[0, 1, IMAGE_TOKEN_INDEX, 2, 3], rows[1]] and am[0].tolist() == [0, 1, 1, 1, 1]
    blocks = [torch.randn(5, H), torch.randn(2, H)]
    emb, mask, vmask = model.build_inputs_embeds(ids, blocks, am)
    assert emb.shape == (2, 8, H)  # row 0: 3 text + 5 visual, row 1: 4 text + 2 visual
    table = model.llm.get_input_embeddings().weight.detach()
    assert torch.equal(emb[0], torch.cat([table[[1]], blocks[0], table[[2, 3]]]))
    assert torch.equal(emb[1, 2:], torch.cat([table[[4, 5, 6]], blocks[1], table[[7]]]))
    assert torch.equal(emb[1, :2], torch.zeros(2, H))
    assert mask.tolist() == [[1] * 8, [0, 0] + [1] * 6]
    assert vmask.sum(1).tolist() == [5, 2]


def test_build_inputs_embeds_errors(model):
    with pytest.raises(ValueError, match="exactly one"):
        model.build_inputs_embeds(torch.tensor([[1, 2, 3]]), torch.randn(1, 2, H))
    with pytest.raises(ValueError, match="exactly one"):
        model.build_inputs_embeds(torch.tensor([[1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]]), torch.randn(1, 2, H))
    with pytest.raises(ValueError):
        model.build_inputs_embeds(torch.tensor([[1, IMAGE_TOKEN_INDEX]]), torch.randn(2, 2, H))


def test_batched_regions_equal_single_regions(model):
    embed, tokens = _features(2, 3)
    settings = GenerationSettings(max_new_tokens=6, repetition_penalty=1.05, pad_token_id=0)
    rows = [[1, 2, IMAGE_TOKEN_INDEX, 3], [4, IMAGE_TOKEN_INDEX, 5, 6, 7, 8]]
    with torch.no_grad():
        blocks = model.image_visual_block(embed, tokens)
        singles = [model.generate(torch.tensor([r]), blocks[i : i + 1], settings, record_logits=True)
                   for i, r in enumerate(rows)]
        ids, am = pad_token_rows(rows, pad_id=0)
        with model.capturing() as cap:
            batch = model.generate(ids, blocks, settings, attention_mask=am)
    for i in range(2):
        assert batch.row_tokens(i) == singles[i].row_tokens(0)
        assert torch.allclose(cap["llm.step_logits"][i], singles[i].step_logits[:, 0], atol=1e-5)
    assert cap["llm.output_ids"].shape == (2, 6)
    assert cap["llm.inputs_embeds"].shape[0] == 2
