"""Training the SAM 2 segmenter: losses, prompt sampling, task batches, gradients, train/eval parity.

Fast (< 1 min on 2 cores): tiny configs, a handful of steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perceive_anything.config import SegmenterConfig, pam_preset
from perceive_anything.modeling.segmenter import PamSegmenter
from perceive_anything.training.eval_segmentation import eval_seed, evaluate_image_iou, evaluate_tracking_miou
from perceive_anything.training.segmentation import (
    ImageSegmentationTask,
    LossWeights,
    VideoTrackingTask,
    dice_loss,
    load_segmenter,
    mask_iou,
    sam_losses,
    sample_prompt,
    semantic_loss,
    semantic_prototypes,
    save_segmenter,
    sigmoid_focal_loss,
    training_seed,
)


def small_config() -> SegmenterConfig:
    # narrower than tiny-shapes (faster tests), same structure and image size
    return SegmenterConfig(
        image_size=256, embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3],
        window_spec=[8, 4, 16, 8], backbone_channel_list=[64, 32, 16, 8], d_model=64,
        memory_attention_num_layers=1, memory_attention_dim_feedforward=64, mem_dim=64,
        mask_decoder_mlp_dim=64, mask_decoder_num_heads=4, mask_in_chans=8,
    )


def fresh(seed: int = 0, cfg: SegmenterConfig | None = None) -> PamSegmenter:
    torch.manual_seed(seed)
    return PamSegmenter(cfg or small_config())


# ---------------------------------------------------------------------------------------------- losses


def test_focal_and_dice_on_hand_made_cases():
    target = torch.zeros(2, 8, 8)
    target[0, 2:6, 2:6] = 1
    target[1, :4] = 1
    perfect = (target * 2 - 1) * 30.0
    assert sigmoid_focal_loss(perfect, target).max() < 1e-6
    assert dice_loss(perfect, target).max() < 1e-6
    wrong = -perfect
    assert (sigmoid_focal_loss(wrong, target) > 1.0).all()
    assert (dice_loss(wrong, target) > 0.9).all()
    # focal: alpha weights positives by 0.25, negatives by 0.75; p_t = 0.5 at logit 0
    ones = torch.ones(1, 4)
    expected = 0.25 * np.log(2) * 0.25  # alpha * ce * (1 - p_t)^2
    assert torch.allclose(sigmoid_focal_loss(torch.zeros(1, 4), ones), torch.tensor([expected], dtype=torch.float32))
    assert torch.allclose(mask_iou(target[:1] > 0, target[1:] > 0), torch.tensor([8 / 40]))


def test_sam_losses_targets():
    target = torch.zeros(3, 16, 16)
    target[0, 4:12, 4:12] = 1
    target[1, 0:8, :] = 1
    present = torch.tensor([True, True, False])
    low = (target[:, None].expand(-1, 4, -1, -1) * 2 - 1) * 30.0  # all four tokens perfect
    # predicted IoU equal to the achieved IoU (1 on present rows), object scores right
    iou_pred = torch.ones(3, 4)
    obj = torch.tensor([[20.0], [20.0], [-20.0]])
    loss, m = sam_losses(low, iou_pred, obj, target, present)
    assert loss < 1e-4 and m["iou"] == 1.0 and m["object_acc"] == 1.0
    assert m["loss_iou"] < 1e-8 and m["loss_dice"] < 1e-6 and m["loss_focal"] < 1e-6
    # a wrong IoU prediction is an MSE against the true IoU; an absent object's mask is never scored
    low_bad = low.clone()
    low_bad[2] = 30.0  # absent row predicts everything: no mask loss for it
    _, m2 = sam_losses(low_bad, torch.zeros(3, 4), obj, target, present, LossWeights(multimask=0))
    assert m2["loss_iou"] == pytest.approx(1.0) and m2["loss_dice"] < 1e-6
    # wrong object score -> BCE term
    _, m3 = sam_losses(low, iou_pred, -obj, target, present)
    assert m3["loss_object"] > 10 and m3["object_acc"] == 0.0


def test_prompt_sampling_follows_ground_truth():
    from perceive_anything.training.synthetic import generate_scene

    scene = generate_scene(3, 256, 4)
    rng = np.random.default_rng(0)
    kinds = set()
    for obj in scene.objects:
        for _ in range(20):
            p = sample_prompt(obj.mask, rng, {"box": 1, "points": 1, "box+points": 1, "mask": 0.3})
            kinds.add(p.kind)
            if p.mask is not None:
                assert (p.mask == obj.mask).all()
                continue
            lab = p.labels.tolist()
            if p.kind != "points":
                assert lab[:2] == [2, 3]
                x0, y0, x1, y1 = obj.box
                bx = p.points[:2].reshape(-1)
                assert np.abs(bx - [x0, y0, x1, y1]).max() <= 20 + 1e-9  # jitter clipped at 20 px
            for (x, y), l in zip(p.points, lab):
                if l == 1:
                    assert obj.mask[int(y), int(x)]
                elif l == 0:
                    assert not obj.mask[int(y), int(x)]
            assert 1 in lab or p.kind != "points"
    assert kinds == {"box", "points", "box+points", "mask"}


# ---------------------------------------------------------------------------------------------- tasks


def test_make_batch_is_deterministic_in_seed_step_rank():
    img = ImageSegmentationTask(size=256)
    a, b = img.make_batch(5, 1, 2, 2, seed=7), img.make_batch(5, 1, 2, 2, seed=7)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.masks, b.masks)
    assert [p.points.tolist() for p in a.prompts] == [p.points.tolist() for p in b.prompts]
    for other in (img.make_batch(6, 1, 2, 2, seed=7), img.make_batch(5, 0, 2, 2, seed=7), img.make_batch(5, 1, 2, 2, seed=8)):
        assert not torch.equal(a.pixels, other.pixels)
    vid = VideoTrackingTask(size=256, num_frames=(3, 4), clip_frames=6)
    va, vb = vid.make_batch(3, 0, 1, 2, seed=1), vid.make_batch(3, 0, 1, 2, seed=1)
    assert torch.equal(va.frames, vb.frames) and torch.equal(va.masks, vb.masks) and va.kind == vb.kind
    assert all(torch.equal(va.prompt[k], vb.prompt[k]) for k in va.prompt)
    assert not torch.equal(va.frames, vid.make_batch(4, 0, 1, 2, seed=1).frames)
    assert va.present[:, 0].all()  # the prompted object is visible on the prompt frame
    # held-out seeds never collide with training seeds
    assert training_seed(7, 1, 5, 1, 0) < 2**31 <= eval_seed(0, 0, 0)


def test_exit_windows_show_the_object_leaving():
    # every clip of an exit_prob=1 batch (that found an exit) starts with the target visible and
    # ends with it gone, so the object-score head is trained on absent targets
    task = VideoTrackingTask(size=256, num_frames=(4, 6), exit_prob=1.0)
    leaving = 0
    for step in range(4):
        batch = task.make_batch(step, 0, 1, 3, seed=0)
        present = batch.present
        assert present[:, 0].all()
        leaving += int((~present[:, -1]).sum())
    assert leaving >= 8, leaving  # of 12 clips; the rest are videos without a usable exit
    plain = VideoTrackingTask(size=256, num_frames=(4, 6), exit_prob=0.0)
    assert torch.equal(plain.make_batch(0, 0, 1, 3, seed=0).frames, plain.make_batch(0, 0, 1, 3, seed=0).frames)
    with pytest.raises(ValueError, match="exit_prob"):
        VideoTrackingTask(exit_prob=1.5)


def test_short_image_training_reduces_loss():
    seg = fresh(0)
    task = ImageSegmentationTask(size=256, regions_per_image=2)
    params = task.trainable_parameters(seg)
    assert params and all(p.requires_grad for p in params)
    opt = torch.optim.AdamW(params, lr=3e-3)
    batch = task.make_batch(0, 0, 1, 2, seed=0)  # one fixed batch: the loss must go down on it
    losses = []
    for _ in range(12):
        loss, metrics = task.loss(seg, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        assert np.isfinite(metrics["loss"])
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_semantic_loss_prototypes_and_its_effect():
    p = semantic_prototypes(28, 64)
    assert torch.equal(p, semantic_prototypes(28, 64))  # fixed: no parameters to save or resume
    assert torch.allclose(p @ p.T, torch.eye(28), atol=1e-5)
    with pytest.raises(ValueError, match="token dim"):
        semantic_prototypes(30, 16)
    classes = torch.tensor([[3, 1], [0, 11], [15, 4]])
    named = torch.stack([p[3] + p[16 + 1], p[0] + p[16 + 11], p[15] + p[16 + 4]])  # tokens naming the classes
    good, m = semantic_loss(named * 5, classes, (16, 12))
    bad, m_bad = semantic_loss(named.roll(1, 0) * 5, classes, (16, 12))
    assert m["sem_acc_0"] == m["sem_acc_1"] == 1.0 and m_bad["sem_acc_0"] == 0.0
    assert float(good) < 0.2 * float(bad)


def test_semantic_term_trains_the_prompted_mask_token():
    seg = fresh(0)
    task = ImageSegmentationTask(size=256, regions_per_image=2, weights=LossWeights(semantic=1.0))
    batch = task.make_batch(0, 0, 1, 2, seed=0)
    assert batch.classes is not None and batch.classes.shape == (len(batch), 2)
    params = task.trainable_parameters(seg)
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for _ in range(15):
        loss, metrics = task.loss(seg, batch)
        first = metrics if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["loss_semantic"] < 0.5 * first["loss_semantic"], (first, metrics)
    assert metrics["sem_acc_0"] == 1.0  # the shapes of this batch's regions, read off their mask tokens
    plain, m_plain = ImageSegmentationTask(size=256, regions_per_image=2).loss(seg, batch)
    assert "loss_semantic" not in m_plain and float(plain.detach()) < float(loss.detach())


def test_video_gradients_reach_trunk_decoder_and_memory():
    seg = fresh(1)
    task = VideoTrackingTask(size=256, num_frames=3, clip_frames=3, prompt_probs={"box": 1.0})
    task.trainable_parameters(seg)
    batch = task.make_batch(0, 0, 1, 2, seed=0)
    loss, metrics = task.loss(seg, batch)
    loss.backward()
    sam = seg.sam

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    for name in ("vision_encoder", "mask_decoder", "memory_attention", "memory_encoder", "object_pointer_proj",
                 "temporal_positional_encoding_projection_layer"):
        assert has_grad(getattr(sam, name)), name
    assert has_grad(sam.vision_encoder.backbone.blocks[0])  # the first Hiera block
    assert sam.memory_temporal_positional_encoding.grad is not None
    assert metrics["frames"] == 3


def test_object_score_head_trains_alone_and_leaves_masks_as_they_were():
    """``train_only="object_score_head"``: on exit windows only the MLP behind the object-score token
    gets gradients and moves; a step leaves every mask logit of a still image unchanged."""
    seg = fresh(2)
    only = LossWeights(focal=0.0, dice=0.0, iou=0.0, multimask=0.0, object=1.0)
    task = VideoTrackingTask(size=256, num_frames=4, clip_frames=12, exit_prob=1.0, weights=only,
                             train_only="object_score_head")
    params = task.trainable_parameters(seg)
    head = seg.sam.mask_decoder.pred_obj_score_head
    assert {id(p) for p in params} == {id(p) for p in head.parameters()}
    assert all(not p.requires_grad for n, p in seg.named_parameters() if ".pred_obj_score_head." not in n)
    image_task = ImageSegmentationTask(size=256, regions_per_image=2, weights=only, train_only="object_score_head")
    image_batch = image_task.make_batch(0, 0, 1, 1, seed=0)
    def decoder_outputs():  # the masks (before the object-score gate) and the perceiver's inputs
        with torch.no_grad():
            return [(o.multimask_logits[j].clone(), o.mid_image_embed[j].clone(), o.mid_mask_tokens[j].clone())
                    for o, j in image_task.forward(seg, image_batch)]

    before = decoder_outputs()
    head_before = [p.detach().clone() for p in head.parameters()]
    batch = task.make_batch(0, 0, 1, 2, seed=0)
    assert not batch.present.all()  # the window reaches past the exit
    loss, _ = task.loss(seg, batch)
    loss.backward()
    torch.optim.SGD(params, lr=0.5).step()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head.parameters()))
    for a, b in zip(before, decoder_outputs()):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="train_only must be None or one of"):
        VideoTrackingTask(train_only="trunk")


def test_training_clip_equals_streaming_tracking():
    # track_clip_for_training on a batch of 2 clips == track_frame clip by clip (same computation)
    seg = fresh(2)
    seg.sam.mask_decoder.pred_obj_score_head.proj_out.bias.data.fill_(1.0)  # ungated masks
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 3, 256, 256, generator=g)
    coords = torch.tensor([[[30.0, 40.0], [150.0, 170.0]], [[60.0, 20.0], [200.0, 120.0]]])
    labels = torch.tensor([[2, 3], [2, 3]], dtype=torch.int32)
    with torch.no_grad():
        outs = seg.track_clip_for_training(frames, coords, labels)
        for b in range(2):
            session = seg.new_tracking_session(num_frames=3)
            seg.add_prompt(session, 0, 1, point_coords=coords[b], point_labels=labels[b])
            for t in range(3):
                ref = seg.track_frame(session, t, frames[b, t : t + 1])[1]
                got = outs[t].select(b)
                for name in ("low_res_logits", "object_score_logits", "iou_pred", "obj_ptr", "mid_image_embed"):
                    torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-4, atol=1e-4)


def test_set_trainable_keeps_inference_semantics(tmp_path):
    seg = fresh(3)
    assert not seg.trainable and not seg.sam.training
    task = ImageSegmentationTask(size=256, regions_per_image=1)
    task.trainable_parameters(seg)
    assert seg.trainable and not seg.sam.training  # no dropout while training either
    loss, _ = task.loss(seg, task.make_batch(0, 0, 1, 1, seed=0))
    loss.backward()  # gradients computed, weights unchanged
    seg.set_trainable(False)
    seg.train()  # PamModel.train() must not switch SAM to train mode
    assert not seg.trainable and not seg.sam.training
    ref = fresh(3)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    coords = torch.tensor([[[20.0, 30.0], [140.0, 160.0]]])
    labels = torch.tensor([[2, 3]], dtype=torch.int32)
    with torch.no_grad():
        a = seg.segment(seg.encode_image(x), coords, labels)
        b = ref.segment(ref.encode_image(x), coords, labels)
    for name in ("low_res_logits", "high_res_logits", "object_score_logits", "iou_pred", "mid_mask_tokens", "obj_ptr"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # weights round-trip through the safetensors file
    path = save_segmenter(seg, tmp_path / "seg.safetensors")
    other = fresh(4)
    load_segmenter(other, path)
    with torch.no_grad():
        c = other.segment(other.encode_image(x), coords, labels)
    assert torch.equal(a.low_res_logits, c.low_res_logits)


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluation_paths_agree(tmp_path):
    # the segmenter-only fast path measures what the public API returns
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import build_tiny_pam

    from perceive_anything import PerceiveAnything

    folder = build_tiny_pam(tmp_path / "tiny", object_bias=2.0)
    pam = PerceiveAnything.from_pretrained(folder)
    fast = evaluate_image_iou(pam.model, n=1, seed=0)
    api = evaluate_image_iou(pam, n=1, seed=0)
    assert fast["path"] == "segmenter" and api["path"] == "api"
    assert fast["box_iou"] == pytest.approx(api["box_iou"], abs=1e-6)
    assert fast["point_iou"] == pytest.approx(api["point_iou"], abs=1e-6)
    tf = evaluate_tracking_miou(pam.model, n_videos=1, num_frames=3, seed=0)
    ta = evaluate_tracking_miou(pam, n_videos=1, num_frames=3, seed=0)
    assert tf["miou"] == pytest.approx(ta["miou"], abs=1e-6)
    assert tf["n_objects"] == ta["n_objects"] > 0
