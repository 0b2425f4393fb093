"""The speed benchmark (benchmarks/speed.py), int8 LLM quantization and the load/caching paths it measures."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _speed_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import speed
    finally:
        sys.path.remove(str(BENCHMARKS))
    return speed


def test_benchmark_regions_are_the_official_benchmarks_boxes(shared_dir):
    """The 16 boxes must be the ones the official side times, or the ratio compares different work."""
    spec = importlib.util.spec_from_file_location("bench_official", shared_dir / "official" / "bench_official.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    assert _speed_module().regions() == official.regions()
    assert len({tuple(b) for b in official.regions()}) == 16


def _run_speed(args, tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    return result


def test_speed_benchmark_image1_reports_and_reproduces_the_fixture_text(shared_dir, golden_case, tmp_path):
    result = _run_speed(["--scenarios", "image1", "--runs", "2", "--threads", "2"], tmp_path)
    scen = result["scenarios"]["image1"]
    s, run = scen["summary"], scen["ours"][0]
    assert len(run["query_s"]) == 2 and s["ours_query_s"] == min(run["query_s"]) > 0
    assert s["ours_load_s"] > 0 and s["ours_peak_rss_mb"] > 100
    assert s["ours_decode_tokens_per_s"] > 0
    assert run["threads"] == 2 and run["dtype"] == "float32"
    assert scen["official"] == [] and "query_ratio" not in s  # no official side asked for
    assert len(result["load_average_start"]) == 3
    # greedy, 12 tokens: exactly the official text of case A (the same query the official side times)
    assert run["texts"] == [golden_case("case_A_image_box_detailcap_en").manifest["outputs"]["text"]]


def test_speed_benchmark_runs_the_ours_only_multi_task_scenario(shared_dir, tmp_path):
    """image16x3: the 16 boxes x 3 tasks in one call; ours only (never sent to the official side)."""
    speed = _speed_module()
    result = _run_speed(["--scenarios", "image16x3", "--runs", "1", "--threads", "1"], tmp_path)
    scen = result["scenarios"]["image16x3"]
    assert "image16x3" in speed.OURS_ONLY and "image16x3" not in speed.SCENARIOS
    assert scen["official"] == [] and len(scen["ours"]) == 1
    texts = scen["ours"][0]["texts"]
    assert len(texts) == 16 * len(speed.MULTI_TASKS) and all(isinstance(t, str) for t in texts)
    assert scen["summary"]["ours_decode_tokens_per_s"] > 0


def test_speed_benchmark_rejects_an_unknown_scenario(shared_dir, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), "--scenarios", "image2", "--out",
                           str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown scenario 'image2'" in proc.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_speed_benchmark_on_cuda_reports_gpu_memory(shared_dir, tmp_path):
    result = _run_speed(["--scenarios", "image1", "--runs", "1", "--device", "cuda", "--dtype", "bfloat16"], tmp_path)
    run = result["scenarios"]["image1"]["ours"][0]
    assert run["device"].startswith("cuda") and run["dtype"] == "bfloat16"
    assert run["cuda_peak_mb"] > 0 and result["scenarios"]["image1"]["summary"]["ours_cuda_peak_mb"] > 0


# ---------------------------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def embedded():
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained()


def test_int8_llm_keeps_the_greedy_answers_of_the_embedded_model(embedded):
    pytest.importorskip("optimum.quanto")
    from perceive_anything import PerceiveAnything
    from perceive_anything.quantization import is_quantized, quantize_llm_int8
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    scene = generate_scene(heldout_seed(0, "test-int8"), size=256)
    boxes = [list(o.box) for o in scene.objects]
    fp32 = embedded.perceive(scene.image, boxes, task=["label", "brief_caption"], max_new_tokens=16)
    q = PerceiveAnything.from_pretrained()
    head = q.model.language.llm.lm_head.weight
    quantize_llm_int8(q.model.language)
    assert is_quantized(q.model.language) and not is_quantized(embedded.model.language)
    # the tied embedding / head is left alone (quantizing it would untie it into a second copy)
    assert q.model.language.llm.lm_head.weight is head is q.model.language.llm.model.embed_tokens.weight
    int8 = q.perceive(scene.image, boxes, task=["label", "brief_caption"], max_new_tokens=16)
    same = total = 0
    for a, b in zip(fp32.regions, int8.regions):
        assert (a.mask == b.mask).all()  # SAM 2 is not quantized
        for x, y in zip(a.outputs, b.outputs):
            same += sum(i == j for i, j in zip(x.token_ids, y.token_ids))
            total += max(len(x.token_ids), len(y.token_ids))
    assert total > 0 and same / total >= 0.9  # measured 0.99 on 38 outputs (benchmarks/int8_quality.py)
    assert quantize_llm_int8(q.model.language) is q.model.language  # idempotent


# ---------------------------------------------------------------------------------------------- load and caches


def test_assigning_load_keeps_the_models_dtype_and_adopts_the_tensors():
    from perceive_anything.checkpoints.native import strict_load

    m = torch.nn.Linear(3, 2)
    sd = {"weight": torch.ones(2, 3, dtype=torch.bfloat16), "bias": torch.zeros(2)}
    strict_load(m, sd, "test", assign=True)
    assert m.weight.dtype == torch.float32 and torch.equal(m.weight, torch.ones(2, 3))
    assert m.bias.data_ptr() == sd["bias"].data_ptr()  # same dtype: no copy
    assert isinstance(m.weight, torch.nn.Parameter)


def test_cached_encodings_from_inference_mode_do_not_leak_into_autograd(embedded):
    seg = embedded.model.segmenter
    with torch.inference_mode():
        a = seg.sam.memory_pos_enc(2, seg.device, seg.dtype)
        pe = seg._dense_pe()
    assert a.is_inference() and pe.is_inference()
    b = seg.sam.memory_pos_enc(2, seg.device, seg.dtype)
    assert not b.is_inference() and not seg._dense_pe().is_inference()
    assert torch.equal(a, b) and b.shape[0] == 2
    # a training step through the prompt encoder's dense PE works after inference use
    w = torch.nn.Parameter(torch.ones(1))
    (seg._dense_pe() * w).sum().backward()
    assert w.grad is not None


def test_image_encoder_builds_only_the_positional_encoding_it_uses(embedded):
    seg = embedded.model.segmenter
    s = seg.config.image_size
    with torch.inference_mode():
        out = seg.sam.vision_encoder(torch.zeros(1, 3, s, s), return_dict=True)
        feats = seg.encode_image(torch.zeros(1, 3, s, s))
    pes = out.fpn_position_encoding
    assert pes[0] is None and pes[1] is None and pes[2] is not None
    assert torch.equal(feats.image_pos, pes[2])


def test_segment_without_high_res_logits_gives_the_same_masks(embedded):
    seg = embedded.model.segmenter
    s = seg.config.image_size
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        feats = seg.encode_image(torch.rand(1, 3, s, s, generator=g))
        coords = torch.tensor([[[10.0, 12.0], [40.0, 50.0]], [[5.0, 5.0], [30.0, 20.0]]])
        labels = torch.tensor([[2, 3], [2, 3]])
        full = seg.segment(feats, coords, labels)
        low = seg.segment(feats, coords, labels, high_res=False)
    assert full.high_res_logits.shape == (2, 1, s, s) and low.high_res_logits is None
    assert torch.equal(full.low_res_logits, low.low_res_logits) and torch.equal(full.obj_ptr, low.obj_ptr)
    assert low.select(1).high_res_logits is None and "high_res_mask_logits" not in low.fixture_tensors()


def test_inference_encoder_folds_the_high_res_fpn_laterals_into_conv_s0_s1(embedded):
    """Inference in float32 computes conv_s(lateral(x)) as one linear map: the same features as the
    two 1x1 convolutions (to float32 rounding), the stride-16 level untouched; training and other
    dtypes keep the two-step path, and a changed weight is picked up."""
    seg = embedded.model.segmenter
    s = seg.config.image_size
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fused = seg.encode_image(x)
        assert seg._fused_high_res() is not None
    with torch.no_grad():
        enc = seg.sam.vision_encoder(x, return_dict=True)
        level0, level1, level2 = enc.fpn_hidden_states
        conv_s0, conv_s1 = seg.sam.mask_decoder.conv_s0, seg.sam.mask_decoder.conv_s1
        torch.testing.assert_close(fused.feat_s0, conv_s0(level0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.feat_s1, conv_s1(level1), rtol=1e-5, atol=1e-5)
        assert torch.equal(fused.image_embed, level2) and torch.equal(fused.image_pos, enc.fpn_position_encoding[2])
        assert fused.feat_s0.shape == conv_s0(level0).shape and fused.feat_s0.is_contiguous()
    with torch.enable_grad():
        assert seg._fused_high_res() is None  # training: gradients reach the FPN and decoder convs apart
    try:
        with torch.no_grad():
            conv_s0.bias.add_(1.0)  # a changed weight (say a training step) re-folds
        with torch.inference_mode():
            assert torch.allclose(seg.encode_image(x).feat_s0, fused.feat_s0 + 1.0, atol=1e-5)
    finally:
        with torch.no_grad():
            conv_s0.bias.sub_(1.0)


@pytest.mark.parametrize("frames,pointers", [(1, 0), (3, 8), (0, 0)])
def test_memory_rope_attention_computes_what_transformers_computes(embedded, frames, pointers):
    """Our memory-attention RoPE attention (broadcast tables, in-place keys) against transformers' own."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoRoPEAttention

    ma = embedded.model.segmenter.sam.memory_attention
    cfg = embedded.model.segmenter.sam.config
    ours_cross, ours_self = ma.layers[0].cross_attn_image, ma.layers[0].self_attn
    assert type(ours_cross).__name__ == "_MemoryRoPEAttention"
    g = torch.Generator().manual_seed(frames)
    n = ma.position_ids.shape[0]
    c = cfg.memory_attention_hidden_size
    q = torch.randn(1, 1, n, c, generator=g)
    cos_sin = ma.rotary_emb(q, ma.position_ids)
    for ours, self_attention in ((ours_cross, False), (ours_self, True)):
        ref = Sam2VideoRoPEAttention(cfg, kv_in_dim=ours.kv_in_dim, rope_k_repeat=ours.rope_k_repeat).eval()
        ref.load_state_dict(ours.state_dict())
        if self_attention:
            kv, excl = q, 0
        elif frames == 0:
            continue
        else:
            kv = torch.randn(1, 1, frames * n + pointers, ours.kv_in_dim, generator=g)
            excl = pointers
        with torch.inference_mode():
            a, _ = ours(q, kv + 0.1, kv, cos_sin, num_k_exclude_rope=excl)
            b, _ = ref(q, kv + 0.1, kv, cos_sin, num_k_exclude_rope=excl)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # and with autograd on (training through the tracker): gradients flow, values unchanged
    kv = torch.randn(1, 1, 2 * n, ours_cross.kv_in_dim, generator=g, requires_grad=True)
    out, _ = ours_cross(q, kv, kv, cos_sin)
    out.sum().backward()
    assert kv.grad is not None and torch.isfinite(kv.grad).all()


def test_releasing_freed_memory_is_asked_of_glibc_on_linux():
    import platform

    from perceive_anything._heap import release_freed_memory

    x = torch.ones(16 * 2**20 // 4)  # 16 MB freed just before
    del x
    asked = release_freed_memory()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert asked is True
