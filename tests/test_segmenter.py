"""PamSegmenter on a tiny random SAM 2.1 (256-pixel input; the same code path as the 1024 models)."""

from __future__ import annotations

import pytest
import torch

from perceive_anything.config import SegmenterConfig
from perceive_anything.modeling.segmenter import NO_OBJ_SCORE, ImageFeatures, PamSegmenter, SegmenterOutput


def tiny_config(**kw) -> SegmenterConfig:
    base = dict(
        image_size=256,
        embed_dim=8,
        num_heads=1,
        stages=[1, 1, 2, 1],
        global_att_blocks=[3],
        window_spec=[4, 4, 4, 4],
        window_pos_embed_bkg_spatial_size=[4, 4],
        backbone_channel_list=[64, 32, 16, 8],
        memory_attention_num_layers=2,
        memory_attention_dim_feedforward=64,
        mask_decoder_mlp_dim=64,
    )
    base.update(kw)
    return SegmenterConfig(**base)


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    model = PamSegmenter(tiny_config())
    # random init gives object scores around 0: push them positive so masks are not all gated
    model.sam.mask_decoder.pred_obj_score_head.proj_out.bias.data.fill_(1.0)
    return model


def _frames(n, size=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 3, size, size, generator=g)
    for _ in range(n):
        yield base + 0.1 * torch.randn(1, 3, size, size, generator=g)


def _boxes(r):
    coords = torch.tensor([[[20.0 + 10 * i, 30.0], [120.0 + 5 * i, 150.0]] for i in range(r)])
    labels = torch.tensor([[2, 3]] * r, dtype=torch.int32)
    return coords, labels


@torch.no_grad()
def test_image_shapes(seg):
    cfg = seg.config
    s, f, c = cfg.image_size, cfg.feature_size, cfg.d_model
    feats = seg.encode_image(next(_frames(1)))
    assert isinstance(feats, ImageFeatures)
    assert feats.image_embed.shape == (1, c, f, f) and feats.image_pos.shape == (1, c, f, f)
    assert feats.feat_s0.shape == (1, c // 8, 4 * f, 4 * f) and feats.feat_s1.shape == (1, c // 4, 2 * f, 2 * f)
    coords, labels = _boxes(3)
    out = seg.segment(feats, coords, labels, capture=True)
    assert isinstance(out, SegmenterOutput) and len(out) == 3
    low = cfg.low_res_mask_size
    assert out.low_res_logits.shape == (3, 1, low, low)
    assert out.high_res_logits.shape == (3, 1, s, s) and out.high_res_logits.dtype == torch.float32
    assert out.object_score_logits.shape == (3, 1)
    assert out.iou_pred.shape == (3, cfg.num_multimask_outputs + 1)
    assert out.stability_score.shape == (3, 1)
    assert out.mid_image_embed.shape == (3, c, f, f)
    assert out.mid_mask_tokens.shape == (3, 2, c)
    assert out.obj_ptr.shape == (3, c)
    for name in ("backbone.level2", "backbone.level0_conv_s0", "backbone.level1_conv_s1", "pix_feat_with_mem"):
        assert name in out.extras
    names = out.fixture_tensors("sam2.frame000.")
    assert "sam2.frame000.mid_mask_tokens_out" in names and "sam2.frame000.low_res_mask_logits" in names
    assert seg.postprocess_masks(out.low_res_logits, (60, 90)).shape == (3, 1, 60, 90)


@torch.no_grad()
def test_regions_are_independent_of_batching(seg):
    feats = seg.encode_image(next(_frames(1)))
    coords, labels = _boxes(3)
    batched = seg.segment(feats, coords, labels)
    for r in range(3):
        single = seg.segment(feats, coords[r : r + 1], labels[r : r + 1])
        for name in ("low_res_logits", "iou_pred", "mid_image_embed", "mid_mask_tokens", "obj_ptr"):
            torch.testing.assert_close(getattr(batched, name)[r : r + 1], getattr(single, name), rtol=1e-4, atol=1e-4)
        one = batched.select(r)
        assert len(one) == 1 and torch.equal(one.obj_ptr, batched.obj_ptr[r : r + 1])


@torch.no_grad()
def test_mid_tokens_follow_stability_rule(seg):
    feats = seg.encode_image(next(_frames(1)))
    coords, labels = _boxes(2)
    out = seg.segment(feats, coords, labels)
    for r in range(2):
        stable = bool(out.stability_score[r, 0] >= seg.config.dynamic_multimask_stability_thresh)
        # stable -> [token 0, token 0]; otherwise the first row is a multimask token (1..3)
        assert torch.equal(out.mid_mask_tokens[r, 0], out.mid_mask_tokens[r, 1]) == stable


@torch.no_grad()
def test_object_score_gate():
    torch.manual_seed(0)
    model = PamSegmenter(tiny_config())
    model.sam.mask_decoder.pred_obj_score_head.proj_out.bias.data.fill_(-100.0)  # "no object" everywhere
    feats = model.encode_image(next(_frames(1)))
    coords, labels = _boxes(2)
    out = model.segment(feats, coords, labels)
    assert (out.object_score_logits <= 0).all()
    assert (out.low_res_logits == NO_OBJ_SCORE).all() and (out.high_res_logits == NO_OBJ_SCORE).all()
    torch.testing.assert_close(out.obj_ptr, model.sam.no_object_pointer.expand(2, -1))
    assert torch.isfinite(out.mid_image_embed).all()  # mid features are not gated


@torch.no_grad()
def test_mask_prompts(seg):
    feats = seg.encode_image(next(_frames(1)))
    masks = torch.zeros(2, 1, 100, 120)
    masks[0, 0, 20:60, 30:90] = 1.0  # second mask empty
    out = seg.segment(feats, None, None, mask_inputs=masks, capture=True)
    low = seg.config.low_res_mask_size
    assert out.low_res_logits.shape == (2, 1, low, low)
    assert out.object_score_logits[:, 0].tolist() == [10.0, -10.0]
    hi = out.high_res_logits[0, 0]
    assert hi.max() == 10.0 and hi.min() == -10.0
    torch.testing.assert_close(out.obj_ptr[1], seg.sam.no_object_pointer[0])
    assert out.mid_mask_tokens.shape == (2, 2, seg.config.d_model) and torch.isfinite(out.mid_image_embed).all()
    with pytest.raises(ValueError):
        seg.segment(feats, *_boxes(2), mask_inputs=masks)


@torch.no_grad()
def test_segment_input_errors(seg):
    feats = seg.encode_image(torch.zeros(2, 3, 256, 256))
    with pytest.raises(ValueError, match="one image"):
        seg.segment(feats, *_boxes(1))
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 256\)"):
        seg.encode_image(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="point_labels"):
        seg.segment(feats.select(0), torch.zeros(1, 2, 2), torch.zeros(1, 3, dtype=torch.int32))


@torch.no_grad()
def test_prompted_frame_equals_image_path(seg):
    x = next(_frames(1))
    coords, labels = _boxes(1)
    image = seg.segment(seg.encode_image(x), coords, labels)
    session = seg.new_tracking_session(num_frames=3)
    seg.add_prompt(session, 0, 7, coords[0], labels[0])
    video = seg.track_frame(session, 0, x, capture=True)
    assert list(video) == [7]
    for name in ("low_res_logits", "mid_image_embed", "mid_mask_tokens", "obj_ptr", "iou_pred"):
        torch.testing.assert_close(getattr(video[7], name), getattr(image, name))
    extras = video[7].extras
    assert extras["maskmem_features"].dtype == torch.bfloat16  # conditioning memory rounded (quirk 1)
    assert "mem_enc_input_mask_logits" in extras and "image_input" in extras


@pytest.fixture(scope="module")
def seg_short_windows():
    """Short memory (2 previous frames) and pointer (4 previous frames) windows: pruning is exercised in a few frames."""
    torch.manual_seed(0)
    model = PamSegmenter(tiny_config(num_maskmem=3, max_obj_ptrs_in_encoder=5))
    model.sam.mask_decoder.pred_obj_score_head.proj_out.bias.data.fill_(1.0)
    return model


@torch.no_grad()
def test_tracking_several_objects_and_late_prompt(seg_short_windows):
    seg = seg_short_windows
    cfg = seg.config
    session = seg.new_tracking_session()  # stream of unknown length
    coords, labels = _boxes(1)
    seg.add_prompt(session, 0, 1, coords[0], labels[0])
    seg.add_prompt(session, 2, 2, torch.tensor([[100.0, 80.0], [60.0, 60.0]]), torch.tensor([1, 0]))
    seen = []
    for t, x in enumerate(_frames(10)):
        outs = seg.track_frame(session, t, x, capture=(t == 5))
        seen.append(sorted(outs))
        for out in outs.values():
            assert torch.isfinite(out.low_res_logits).all() and torch.isfinite(out.mid_image_embed).all()
        if t == 5:
            assert outs[1].extras["maskmem_features"].dtype == torch.float32  # tracked memory stays fp32
        # bounded state: per object 1 prompted frame + <= num_maskmem-1 memories + <= max_ptrs-1 pointers
        for obj in session.objects.values():
            mems = sum(fr.maskmem_features is not None for fr in obj.non_cond_frames.values())
            assert mems <= cfg.num_maskmem - 1
            assert len(obj.non_cond_frames) <= cfg.max_obj_ptrs_in_encoder - 1
    assert seen[0] == [1] and seen[1] == [1] and all(s == [1, 2] for s in seen[2:])
    assert session.memory_footprint() <= 2 * (2 + (cfg.num_maskmem - 1) + (cfg.max_obj_ptrs_in_encoder - 1))
    with pytest.raises(ValueError, match="order"):
        seg.track_frame(session, 5, next(_frames(1)))
    with pytest.raises(ValueError, match="already been passed"):
        seg.add_prompt(session, 3, 3, coords[0], labels[0])


@torch.no_grad()
def test_pruning_does_not_change_results(seg_short_windows, monkeypatch):
    seg = seg_short_windows

    def run():
        session = seg.new_tracking_session()
        coords, labels = _boxes(1)
        seg.add_prompt(session, 0, 1, coords[0], labels[0])
        return [seg.track_frame(session, t, x)[1] for t, x in enumerate(_frames(9, seed=3))]

    pruned = run()
    monkeypatch.setattr(PamSegmenter, "_prune", lambda self, session, frame_idx: None)
    full = run()
    for a, b in zip(pruned, full):
        assert torch.equal(a.low_res_logits, b.low_res_logits)
        assert torch.equal(a.obj_ptr, b.obj_ptr)


@torch.no_grad()
def test_reverse_session_and_mask_prompt(seg):
    session = seg.new_tracking_session(num_frames=6, reverse=True)
    mask = torch.zeros(256, 256)
    mask[40:120, 50:150] = 1
    seg.add_prompt(session, 5, 1, mask=mask)
    frames = list(_frames(6))
    outs = [seg.track_frame(session, t, frames[t])[1] for t in range(5, -1, -1)]
    assert outs[0].object_score_logits.item() == 10.0
    assert all(torch.isfinite(o.low_res_logits).all() for o in outs)
    with pytest.raises(ValueError, match="decreasing"):
        seg.track_frame(session, 3, frames[3])


@torch.no_grad()
def test_bfloat16_runs():
    torch.manual_seed(0)
    model = PamSegmenter(tiny_config()).to(torch.bfloat16)
    model.sam.mask_decoder.pred_obj_score_head.proj_out.bias.data.fill_(1.0)
    frames = list(_frames(2))
    feats = model.encode_image(frames[0])
    assert feats.feat_s0.dtype == torch.bfloat16
    assert feats.image_embed.dtype == torch.float32  # official FPN: the stride-16 sum stays fp32
    coords, labels = _boxes(2)
    out = model.segment(feats, coords.to(torch.bfloat16), labels)
    assert out.low_res_logits.dtype == torch.bfloat16 and out.high_res_logits.dtype == torch.float32
    assert torch.isfinite(out.mid_image_embed.float()).all()
    session = model.new_tracking_session(num_frames=2)
    model.add_prompt(session, 0, 1, coords[0].to(torch.bfloat16), labels[0])
    for t, x in enumerate(frames):
        o = model.track_frame(session, t, x)[1]
        assert torch.isfinite(o.low_res_logits.float()).all()
    # the RoPE tables stay float32 even though the module was cast
    cos, _ = model.sam.memory_attention.rotary_emb(torch.zeros(1), model.sam.memory_attention.position_ids)
    assert cos.dtype == torch.float32


def test_segmenter_is_frozen_and_eval():
    model = PamSegmenter(tiny_config())
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.sam.training
