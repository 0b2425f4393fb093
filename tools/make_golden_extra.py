"""Produce the extra golden fixtures (``tests/golden_extra``) with the OFFICIAL PAM code.

Run in the official environment of ``../shared/official`` (see its README)::

    PAM_MIRROR=<git dir of Perceive-Anything/PAM> bash ../shared/official/setup_env.sh
    PAM_OFFICIAL_DIR=/tmp/pam_official /tmp/official-venv/bin/python tools/make_golden_extra.py \
        --out tests/golden_extra [--only CASE ...]

Nothing of the official code is copied here: the official ``llava``/``sam2`` packages are imported at
run time from the extracted tree, and ``../shared/official/pam_harness.py`` provides the official call
paths and the pass-through recorder of intermediate tensors. The output has the layout of
``../shared/golden`` (``manifest.json``, ``inputs/``, ``outputs.safetensors`` per case, ``weights/``),
except that each model's large weight files are stored as a recipe (``weights/<shape>/recipe.json``,
see ``perceive_anything/golden/weights_recipe.py``): the official code ran on the materialised files,
whose SHA-256 the recipe records.

Fingerprints keep the fixtures small: no 64x64 feature map is stored in full; the frames in
``full_tensor_frames`` get fine (stride 8) fingerprints, those in ``fingerprint_frames`` coarse ones
(stride 16), all others only the small per-frame tensors (object score, pointer, IoU, stability, mask
tokens, a low-res mask fingerprint).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAM_SHARED_DIR") or REPO.parent / "shared")


def _import_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


recipe_mod = _import_path("pam_weights_recipe", REPO / "src/perceive_anything/golden/weights_recipe.py")
sys.path.insert(0, str(SHARED / "official"))
import pam_harness as H  # noqa: E402

GEN_KWARGS = dict(H.GEN_KWARGS)

# ------------------------------------------------------------------------------------------------ shapes
# The official Hiera cannot put a global-attention block first in a later stage (a q-pool block: its
# window size 0 is divided by the query stride -> ZeroDivisionError), so none of these does.
# Every size the issue lists is varied across the shapes; the public fixture is Hiera 32/1 [1,1,2,1] +
# Qwen2 128/2 layers/4 heads/2 KV heads, tied.
SHAPES = {
    "s1": dict(
        hiera=dict(embed_dim=16, num_heads=2, stages=[1, 2, 3, 1], global_att_blocks=[4, 5],
                   window_spec=[8, 4, 8, 4], window_pos_embed_bkg_spatial_size=[4, 4]),
        mem_layers=1, mem_ff=256, num_maskmem=3,
        llm=dict(hidden_size=48, intermediate_size=136, num_hidden_layers=3, num_attention_heads=6,
                 num_key_value_heads=2, vocab_size=2400, tie_word_embeddings=True, rope_theta=1000000.0,
                 rms_norm_eps=1e-6),
        seed=101,
    ),
    "s2_untied": dict(
        hiera=dict(embed_dim=24, num_heads=1, stages=[2, 1, 2, 2], global_att_blocks=[4, 6],
                   window_spec=[4, 8, 8, 8], window_pos_embed_bkg_spatial_size=[6, 6]),
        mem_layers=2, mem_ff=384, num_maskmem=7,
        llm=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, vocab_size=2352, tie_word_embeddings=False, rope_theta=1000000.0,
                 rms_norm_eps=1e-6),
        seed=202,
    ),
    "s3": dict(
        hiera=dict(embed_dim=8, num_heads=1, stages=[1, 1, 3, 2], global_att_blocks=[3, 6],
                   window_spec=[16, 8, 4, 2], window_pos_embed_bkg_spatial_size=[8, 8]),
        mem_layers=1, mem_ff=128, num_maskmem=4,
        llm=dict(hidden_size=40, intermediate_size=96, num_hidden_layers=1, num_attention_heads=5,
                 num_key_value_heads=5, vocab_size=2368, tie_word_embeddings=True, rope_theta=10000.0,
                 rms_norm_eps=1e-5),
        seed=303,
    ),
}

# ------------------------------------------------------------------------------------------------ cases
CASES = [
    dict(name="x1_s1_image_portrait_points_neg_recognize_ch", shape="s1", kind="image", size=(96, 136),
         prompt=dict(points=[[40, 60], [52, 80], [85, 20]], labels=[1, 1, 0]), task_mode="recognize_ch", seed=11),
    dict(name="x2_s2u_image_odd_box_detailcap_en", shape="s2_untied", kind="image", size=(131, 97),
         prompt=dict(box_xywh=[30, 22, 50, 46]), task_mode="detail_cap_en", seed=12),
    dict(name="x3_s3_image_box_explain_ch", shape="s3", kind="image", size=(120, 90),
         prompt=dict(box_xywh=[20, 15, 48, 44]), task_mode="explain_ch", seed=13),
    dict(name="x4_s2u_video17_portrait_points_cap_ch", shape="s2_untied", kind="video", size=(90, 122), frames=17,
         prompt=dict(points=[[40, 50], [48, 62], [80, 110]], labels=[1, 1, 0]), task_mode="video_cap_ch", seed=14),
    dict(name="x5_s3_video33_box_cap_en", shape="s3", kind="video", size=(113, 83), frames=33,
         prompt=dict(box_xywh=[14, 20, 40, 38]), task_mode="video_cap_en", seed=15),
    dict(name="x6_s1_stream4x16_box_cap_en", shape="s1", kind="stream", size=(112, 84), frames=64,
         timesteps=[16, 32, 48, 64], prompt=dict(box_xywh=[16, 18, 40, 36]), task_mode="video_cap_en", seed=16),
]
MAX_NEW_TOKENS = 8


# ------------------------------------------------------------------------------------------------ weights


def _yaml_for(shape: dict) -> tuple[dict, dict]:
    import yaml

    base = yaml.safe_load(open(Path(H.OFFICIAL_DIR) / "sam2/sam2/configs/sam2.1/sam2.1_hiera_l.yaml"))
    cfg = copy.deepcopy(base)
    hi = shape["hiera"]
    trunk = cfg["model"]["image_encoder"]["trunk"]
    over = {}
    for k, v in hi.items():
        trunk[k] = v
        over[f"model.image_encoder.trunk.{k}"] = v
    chans = [hi["embed_dim"] * 2**i for i in range(len(hi["stages"]))][::-1]
    cfg["model"]["image_encoder"]["neck"]["backbone_channel_list"] = chans
    over["model.image_encoder.neck.backbone_channel_list"] = chans
    cfg["model"]["memory_attention"]["num_layers"] = shape["mem_layers"]
    cfg["model"]["memory_attention"]["layer"]["dim_feedforward"] = shape["mem_ff"]
    over["model.memory_attention.num_layers"] = shape["mem_layers"]
    over["model.memory_attention.layer.dim_feedforward"] = shape["mem_ff"]
    if shape["num_maskmem"] != cfg["model"]["num_maskmem"]:
        cfg["model"]["num_maskmem"] = shape["num_maskmem"]
        over["model.num_maskmem"] = shape["num_maskmem"]
    return cfg, over


def _write_yaml(path: Path, cfg: dict, over: dict) -> None:
    import yaml

    head = ["# @package _global_",
            "# PAM extra parity fixture: official PAM sam2/sam2/configs/sam2.1/sam2.1_hiera_l.yaml with overrides:"]
    head += [f"#   {k}: {json.dumps(v)}" for k, v in over.items()]
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(cfg, sort_keys=False))


def _official_config(shape: dict) -> dict:
    pub = json.loads((SHARED / "golden/weights/pam_model/config.json").read_text())
    cfg = dict(pub)
    cfg.update(shape["llm"])
    cfg["initializer_range"] = 0.1
    return dict(sorted(cfg.items()))


def _sam2_init(name: str, shape: list[int]) -> list:
    n = name
    if n.endswith("pe_layer.positional_encoding_gaussian_matrix"):
        return ["uniform", 0.0, 1.0]
    if any(k in n for k in ("point_embeddings.", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens",
                            "obj_score_token")):
        return ["uniform", 0.0, 1.0]
    if n.endswith(("pos_embed", "pos_embed_window")):
        return ["uniform", 0.0, 0.05]
    if n in ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"):
        return ["uniform", 0.0, 0.05]
    if n.endswith("gamma"):  # CXBlock layer scale (1e-6 at official init)
        return ["uniform", 0.0, 0.1]
    # official edits of the public fixtures: a random object-score head says "absent" everywhere and a random
    # hypernetwork puts most pixels within float noise of 0
    if n == "sam_mask_decoder.pred_obj_score_head.layers.2.bias":
        return ["uniform", 0.5, 0.02]
    hyper = ".output_hypernetworks_mlps." in n and ".layers.2." in n
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return ["uniform", 0.0, (20.0 if hyper else 1.0) / math.sqrt(fan_in)]
    if n.endswith("bias"):
        return ["uniform", 0.0, 0.4 if hyper else 0.02]
    if n.endswith("weight"):  # LayerNorm / LayerNorm2d
        return ["uniform", 1.0, 0.1]
    raise ValueError(f"no init rule for {name} {shape}")


def _pam_init(name: str, shape: list[int], hidden: int) -> list:
    n = name
    if n in ("model.embed_tokens.weight", "lm_head.weight"):
        return ["uniform", 0.0, 0.1]
    if n in ("model.image_newline", "model.semT_newline", "model.frame_newline"):
        return ["uniform", 0.0, 1.0 / math.sqrt(hidden)]
    if n.endswith("pe_layer.positional_encoding_gaussian_matrix"):
        return ["uniform", 0.0, 1.0]
    if n.endswith("sem_tokens.weight"):
        return ["uniform", 0.0, 1.0]
    if len(shape) >= 2:
        return ["uniform", 0.0, 1.0 / math.sqrt(int(np.prod(shape[1:])))]
    if n.endswith("bias"):
        return ["uniform", 0.0, 0.02]
    if n.endswith("weight"):  # LayerNorm / RMSNorm
        return ["uniform", 1.0, 0.1]
    raise ValueError(f"no init rule for {name} {shape}")


def build_shape(name: str, shape: dict, out_weights: Path, scratch: Path) -> Path:
    """Write weights/<name>/ (small files + recipe) and materialise it under scratch; returns the latter."""
    root = out_weights / name
    if root.exists():
        shutil.rmtree(root)
    (root / "pam_model").mkdir(parents=True)
    (root / "sam2").mkdir(parents=True)
    cfg, over = _yaml_for(shape)
    yaml_name = f"sam2.1_hiera_{name}.yaml"
    _write_yaml(root / "sam2" / yaml_name, cfg, over)
    official_cfg = _official_config(shape)
    (root / "pam_model/config.json").write_text(json.dumps(official_cfg, indent=2) + "\n")
    shutil.copyfile(SHARED / "golden/weights/pam_model/generation_config.json", root / "pam_model/generation_config.json")

    # parameter names and shapes from the official classes themselves
    H.use_sam2_fixture(str(root / "sam2"), yaml_name, str(root / "sam2" / "unused.pt"))
    from sam2.build_sam import build_sam2_video_predictor

    sam = build_sam2_video_predictor(yaml_name, None, device="cpu")
    sam_sd = sam.state_dict()
    from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM

    lcfg = LlavaQwenConfig(**{k: v for k, v in official_cfg.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        pam = LlavaQwenForCausalLM(lcfg)
    pam_sd = {k: v for k, v in pam.state_dict().items() if not k.startswith("model.vision_tower.")}
    if official_cfg["tie_word_embeddings"]:
        pam_sd.pop("lm_head.weight", None)
    hidden = official_cfg["hidden_size"]
    seed = shape["seed"]
    files = {
        "pam_model/model.safetensors": dict(
            container="safetensors", metadata={"format": "pt"}, seed=seed,
            tensors=[[k, list(v.shape), "float32", _pam_init(k, list(v.shape), hidden)] for k, v in pam_sd.items()]),
        f"sam2/sam2.1_hiera_{name}.pt": dict(
            container="torch_save_model", seed=seed + 1,
            tensors=[[k, list(v.shape), "float32", _sam2_init(k, list(v.shape))] for k, v in sam_sd.items()]),
    }
    for spec in files.values():
        spec["sha256"] = recipe_mod.tensors_sha256(recipe_mod.build_file_tensors(spec))
    tok_files = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                 "special_tokens_map.json"]
    recipe = dict(format=recipe_mod.FORMAT, version=recipe_mod.VERSION,
                  description=f"PAM extra parity fixture weights, model shape {name!r} (see tools/make_golden_extra.py)",
                  shape=shape, sam2_yaml_overrides=over, files=files,
                  copy={f"pam_model/{f}": f"../tokenizer/{f}" for f in tok_files})
    (root / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    dest = scratch / name
    if dest.exists():
        shutil.rmtree(dest)
    return recipe_mod.materialize(root, dest)


# ------------------------------------------------------------------------------------------------ inputs


def _scene(w: int, h: int, t: int, n: int, seed: int):
    """A synthetic frame: textured gradient background, a red disk (the subject) moving, a blue square,
    a green triangle. Deterministic in (seed, t)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([60 + 80 * xx / w, 90 + 60 * yy / h, 140 - 50 * xx / w], -1)
    tex = rng.integers(-18, 18, size=(h, w, 3))
    img = Image.fromarray(np.clip(base + tex, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    f = t / max(n - 1, 1)
    cx, cy, r = w * (0.35 + 0.25 * f), h * (0.45 + 0.1 * math.sin(3 * f)), min(w, h) * 0.2
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(210, 40, 40))
    s = min(w, h) * 0.18
    d.rectangle([w * 0.72, h * 0.1 + 10 * f, w * 0.72 + s, h * 0.1 + s + 10 * f], fill=(40, 60, 200))
    d.polygon([(w * 0.1, h * 0.9), (w * 0.25, h * 0.6), (w * 0.4, h * 0.9)], fill=(40, 170, 60))
    return img


def _save_jpeg(img, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=92, subsampling=0)


# ------------------------------------------------------------------------------------------------ capture -> tensors


def _sub(x: torch.Tensor, k: int, tokens: bool = False) -> torch.Tensor:
    return (x[:, ::k, :] if tokens else x[..., ::k, ::k]).contiguous()


def _flat_to_bchw(v: torch.Tensor, size) -> torch.Tensor:
    hw, b, c = v.shape
    return v.permute(1, 2, 0).reshape(b, c, size[0], size[1])


class Store:
    """Tensors + index of one case, honouring the full / fingerprint / small-only frame policy."""

    def __init__(self, stride: int):
        self.t: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.index: dict = {}
        self.stride = stride

    def put(self, name: str, x: torch.Tensor, desc: str = "") -> None:
        x = x.detach().cpu().contiguous()
        if x.is_floating_point():
            x = x.float()
        self.t[name] = x
        self.index[name] = dict(shape=list(x.shape), dtype=str(x.dtype).removeprefix("torch."), desc=desc)

    def map(self, name: str, x: torch.Tensor, full: bool, fp: bool, k: int | None = None, desc: str = "",
            tokens: bool = False) -> None:
        if full and k is None:
            k = 8  # "fine" fingerprint: full tensors of 64x64 maps would make the fixtures too large
        if full or fp:
            k = k or self.stride
            self.put(f"{name}@sub{k}", _sub(x, k, tokens), desc + f", fingerprint [..., ::{k}, ::{k}]")


def _one(events, what):
    assert len(events) == 1, (what, len(events))
    return events[0]


def record_call(rec, prefix: str, kind: str, n_frames: int, selected: list[int], store: Store,
                full: set[int], fp: set[int], frame_hw) -> dict:
    """Turn one generate call's events into fixture tensors; returns per-call diagnostics."""
    is_video = kind != "image"
    st = _one(rec.of("init_state"), "init_state")
    images = st["images"]
    feats = {e["frame_idx"]: e for e in rec.of("image_feature")}
    tracks = rec.of("track_step")
    dyn = rec.of("dyn_multimask")
    assert len(tracks) == len(dyn) == n_frames, (len(tracks), len(dyn), n_frames)
    pix = rec.of("pix_feat_with_mem")
    assert len(pix) == n_frames
    add = _one(rec.of("add_new_points_or_box"), "add")
    prop = {e["frame_idx"]: e for e in rec.of("propagate")}
    store.put(f"{prefix}sam2.prompt.point_coords", add["point_coords"], "SAM 2 point_inputs['point_coords'] (1024 model coords)")
    store.put(f"{prefix}sam2.prompt.point_labels", add["point_labels"].to(torch.int32), "SAM 2 point_inputs['point_labels']")
    diag = dict(multimask_iou_top1_minus_top2=[], stability_minus_thresh_abs=[], is_stable=[],
                low_res_mask_min_abs_logit=[], object_score_logits=[], mask_area_fraction=[])
    for i, (tr, dy, px) in enumerate(zip(tracks, dyn, pix)):
        t = tr["frame_idx"]
        assert t == i and px["frame_idx"] == t
        p = f"{prefix}sam2.frame{t:03d}."
        F, FP = t in full, t in fp
        img = images[t : t + 1].float()
        store.map(p + "image_input", img, False, True, k=8 if t == 0 else 64, desc="normalised SAM 2 input")
        fe = feats[t]
        level2 = _flat_to_bchw(fe["vision_feats"][2], fe["feat_sizes"][2])
        store.map(p + "backbone.level2", level2, F, FP, desc="top FPN level (backbone_fpn[2])")
        if kind == "image":
            store.map(p + "backbone.level0_conv_s0", _flat_to_bchw(fe["vision_feats"][0], fe["feat_sizes"][0]),
                      False, True, k=8, desc="backbone_fpn[0] after conv_s0")
            store.map(p + "backbone.level1_conv_s1", _flat_to_bchw(fe["vision_feats"][1], fe["feat_sizes"][1]),
                      False, True, k=8, desc="backbone_fpn[1] after conv_s1")
        store.map(p + "pix_feat_with_mem", px["value"], F, FP, desc="output of _prepare_memory_conditioned_features")
        if t == 0:
            store.put(p + "low_res_mask_logits", tr["pred_masks"], "track_step pred_masks")
        else:
            store.map(p + "low_res_mask_logits", tr["pred_masks"], False, True, k=4 if F else 16, desc="track_step pred_masks")
        store.map(p + "high_res_mask_logits", tr["pred_masks_high_res"], False, F or FP, k=16 if F else 64,
                  desc="pred_masks_high_res")
        store.put(p + "object_score_logits", tr["object_score_logits"])
        store.put(p + "obj_ptr", tr["obj_ptr"])
        store.put(p + "mid_mask_tokens_out", tr["mid_mask_tokens_out"], "[selected token, token 0]")
        store.put(p + "iou_pred", dy["iou_pred"])
        store.put(p + "stability_score", dy["stability_score"].reshape(1, 1))
        store.map(p + "mid_image_embed", tr["mid_image_embed"], F, FP, desc="mask-decoder two-way-transformer image output")
        if tr["maskmem_features"] is not None and t != 0:
            store.map(p + "maskmem_features", tr["maskmem_features"], F, FP, desc="memory of a tracked frame")
        iou = dy["iou_pred"][0, 1:].sort(descending=True).values
        diag["multimask_iou_top1_minus_top2"].append(float(iou[0] - iou[1]))
        diag["stability_minus_thresh_abs"].append(abs(float(dy["stability_score"].reshape(-1)[0]) - 0.98))
        diag["is_stable"].append(bool(dy["is_stable"].reshape(-1)[0]))
        diag["low_res_mask_min_abs_logit"].append(float(tr["pred_masks"].abs().min()))
        diag["object_score_logits"].append(float(tr["object_score_logits"].reshape(-1)[0]))
    if is_video:
        mem0 = _one(rec.of("run_memory_encoder"), "run_memory_encoder")
        assert mem0["frame_idx"] == 0
        store.map(f"{prefix}sam2.frame000.maskmem_features", mem0["maskmem_features"], False, True, k=4,
                  desc="bf16-rounded memory of the conditioning frame")
        store.map(f"{prefix}sam2.frame000.mem_enc_input_mask_logits", mem0["high_res_masks"], False, True, k=16,
                  desc="consolidated mask upsampled to 1024 (cond-frame memory encoder input, before binarisation)")
    h, w = frame_hw
    frac_small = []
    for t in range(n_frames):
        v = add["video_res_masks"] if t == 0 else prop[t]["video_res_masks"]
        assert tuple(v.shape[-2:]) == (h, w)
        if t == 0 or t in full:
            store.put(f"{prefix}sam2.frame{t:03d}.video_res_mask_logits", v, "mask logits at frame resolution")
        frac_small.append(float((v.abs() < 1e-3).float().mean()))
        diag["mask_area_fraction"].append(float((v > 0).float().mean()))
    diag["video_res_mask_frac_abs_below_1e-3"] = frac_small

    # perceiver / projectors: one call per LLM frame, in LLM order
    per = rec.of("perceiver")
    psem = rec.of("projector_semT")
    pimg = rec.of("projector_img")
    assert len(per) == len(psem) == len(pimg) == len(selected)
    for fid, pe, ps in zip(selected, per, psem):
        p = f"{prefix}perceiver.frame{fid:03d}."
        store.put(p + "sem_tokens", pe["sem_tokens"], f"Semantic_Perceiver output 0 (scale_factor={pe['scale_factor']})")
        kt = 32 if pe["image_tokens"].shape[1] > 256 else 16
        store.map(p + "image_tokens", pe["image_tokens"], False, True, k=kt, tokens=True,
                  desc=f"Semantic_Perceiver output 1, [:, ::{kt}, :] (scale_factor={pe['scale_factor']})")
        store.put(f"{prefix}projector.frame{fid:03d}.sem", ps["output"], "mm_projector_semT output")
    mm = rec.of("prepare_mm")[0]  # later decoding steps pass through it without visual input
    assert all(e["inputs_embeds"] is None for e in rec.of("prepare_mm")[1:])
    store.put(f"{prefix}llm.input_ids", mm["input_ids"].to(torch.int64), "tokenizer_image_token output (-200 = <image>)")
    store.put(f"{prefix}llm.inputs_embeds", mm["inputs_embeds"], "inputs_embeds passed to generate")
    # virtual projector.frameNNN.image: check bit-equality with the rows of inputs_embeds
    layout = _layout(mm["input_ids"][0].tolist(), [pi["output"].shape[1] for pi in pimg], selected, is_video,
                     mm["inputs_embeds"].shape[1])
    for e in layout:
        if e["what"] == "image_tokens":
            k = selected.index(e["frame"])
            rows = mm["inputs_embeds"][:, e["rows"][0] : e["rows"][1]]
            assert torch.equal(rows, pimg[k]["output"].reshape(rows.shape)), "projector rows differ from inputs_embeds"
    heads = rec.of("lm_head")
    procs = rec.of("logits_processor")
    step_logits = torch.cat([e["last_logits"] for e in heads], 0)
    step_scores = torch.cat([e["processed"] for e in procs], 0)
    store.put(f"{prefix}llm.first_token_logits", heads[0]["last_logits"], "raw lm_head logits at the last prompt position")
    store.put(f"{prefix}llm.step_logits", step_logits, "raw lm_head logits of every decoding step")
    store.put(f"{prefix}llm.step_scores", step_scores, "scores after generate's logits processors")
    top2 = step_scores.topk(2, dim=-1).values
    llm_diag = dict(greedy_top1_minus_top2=(top2[:, 0] - top2[:, 1]).tolist(),
                    repetition_penalty_changed_argmax=(step_logits.argmax(-1) != step_scores.argmax(-1)).tolist())
    return dict(sam2=diag, llm=llm_diag, layout=layout)


def _layout(ids: list[int], img_rows: list[int], selected: list[int], video: bool, total: int) -> list[dict]:
    pos = ids.index(-200)
    out = [dict(what="text", token_range=[0, pos], rows=[0, pos])]
    r = pos
    for fid, n in zip(selected, img_rows):
        for what, cnt in (("image_tokens", n), ("image_newline", 1), ("sem_tokens", 16), ("semT_newline", 1)) + (
                (("frame_newline", 1),) if video else ()):
            out.append(dict(what=what, frame=fid, rows=[r, r + cnt]))
            r += cnt
    out.append(dict(what="text", token_range=[pos + 1, len(ids)], rows=[r, r + len(ids) - pos - 1]))
    assert r + len(ids) - pos - 1 == total, (r, len(ids), pos, total)
    return out


# ------------------------------------------------------------------------------------------------ running


def _prompt_args(p: dict):
    if "box_xywh" in p:
        x, y, w, h = p["box_xywh"]
        return [x, y, x + w, y + h], None
    return p["points"], p["labels"]


def _gen(model, tokenizer, task_prompt, images, vp, labels, types):
    prompt, input_ids = H.build_prompt(tokenizer, task_prompt)
    rec = H.Recorder()
    kw = dict(GEN_KWARGS, max_new_tokens=MAX_NEW_TOKENS)
    with rec.active(model), torch.inference_mode():
        out_ids, all_masks, all_scores = model.generate(input_ids, images=images, visual_prompts=[vp], vp_labels=[labels],
                                                        types=types, **kw)
    text = tokenizer.batch_decode(out_ids, skip_special_tokens=True)[0].strip()
    dec = tokenizer.batch_decode(out_ids, skip_special_tokens=False)[0]
    return prompt, input_ids, rec, out_ids, all_masks, all_scores, text, dec, kw


def run_case(case: dict, model, tokenizer, weights_rel: dict, out: Path) -> dict:
    cdir = out / case["name"]
    if cdir.exists():
        shutil.rmtree(cdir)
    (cdir / "inputs").mkdir(parents=True)
    w, h = case["size"]
    kind = case["kind"]
    n = case.get("frames", 1)
    paths = []
    for t in range(n):
        rel = "inputs/image.jpg" if kind == "image" else f"inputs/frames/{t:05d}.jpg"
        _save_jpeg(_scene(w, h, t, n, case["seed"]), cdir / rel)
        paths.append(rel)
    vp, labels = _prompt_args(case["prompt"])
    if kind == "image":
        modes = H.notebook_task_modes("image_infer_example.ipynb")
    else:
        modes = H.notebook_task_modes("video_stream_infer_example.ipynb" if kind == "stream" else "video_infer_example.ipynb")
    store = Store(stride=16)
    man: dict = dict(case=case["name"], kind=kind, shape=case["shape"],
                     notebook={"image": "notebooks/image_infer_example.ipynb", "video": "notebooks/video_infer_example.ipynb",
                               "stream": "notebooks/video_stream_infer_example.ipynb"}[kind],
                     weights=weights_rel)
    t0 = time.perf_counter()
    if kind in ("image", "video"):
        task_prompt = modes[case["task_mode"]]
        abs_paths = [str(cdir / p) for p in paths]
        images = [[abs_paths[0]]] if kind == "image" else [abs_paths]
        prompt, input_ids, rec, out_ids, all_masks, all_scores, text, dec, kw = _gen(
            model, tokenizer, task_prompt, images, vp, labels, [kind])
        selected = [0] if kind == "image" else [0] + np.linspace(1, n - 1, 15, dtype=int).tolist()
        full = {0} if kind == "image" else {n - 1}  # fine (stride 8) fingerprints
        fp = set(range(n)) if kind == "image" else {0, 1, n // 2, n - 1}
        diag = record_call(rec, "", kind, n, selected, store, full, fp, (h, w))
        store.put("llm.output_ids", out_ids.to(torch.int64), "generate() output ids (new tokens only)")
        if kind == "image":
            logits = all_masks[0]
            store.put("official.all_masks_logits.0", logits, "official all_masks_logits[0] (logits at frame resolution)")
            store.put("official.all_masks_logits.0.binary", logits > 0.0, "all_masks_logits[0] > 0")
            store.put("official.all_scores.0", torch.as_tensor(all_scores[0]).reshape(1, 1), "official all_scores[0]")
            scores = [float(np.asarray(all_scores[0]).reshape(-1)[0])]
        else:
            bm = torch.stack([torch.as_tensor(all_masks[0][t][1]) for t in range(n)])
            store.map("official.binary_masks", bm, False, True, k=2, desc="official all_masks_logits[0][t][1] stacked (bool)")
            sc = torch.stack([torch.as_tensor(np.asarray(all_scores[0][t])).reshape(1, 1).float() for t in range(n)])
            store.put("official.scores", sc, "official all_scores[0][t] stacked")
            scores = sc.reshape(-1).tolist()
        inputs = dict(frame_size_wh=[w, h], task_mode=case["task_mode"], task_prompt=task_prompt, prompt=prompt,
                      prompt_input_ids=input_ids[0].tolist(), types=[kind])
        if kind == "image":
            inputs["images"] = paths
        else:
            inputs["frames"] = paths
            inputs["sample_num"] = n
        if "box_xywh" in case["prompt"]:
            inputs["bbox_xywh"] = case["prompt"]["box_xywh"]
        inputs["visual_prompts"] = vp
        inputs["vp_labels"] = labels
        man["inputs"] = inputs
        man["official_call"] = dict(call=f"model.generate(input_ids, images={'[[image]]' if kind == 'image' else '[frames]'}, "
                                         f"visual_prompts=[visual_prompts], vp_labels=[vp_labels], types=['{kind}'], **gen_kwargs)",
                                    gen_kwargs=kw)
        man["outputs"] = dict(text=text, output_ids=out_ids[0].tolist(), decoded_with_special_tokens=dec,
                              object_score_logits=scores, mask_area_fraction=diag["sam2"]["mask_area_fraction"],
                              inputs_embeds_len=diag["layout"][-1]["rows"][1], inputs_embeds_layout=diag["layout"])
        if kind == "video":
            man["outputs"]["selected_frame_ids"] = selected
        man["full_tensor_frames"] = sorted(full)
        man["fingerprint_frames"] = sorted(fp)
        man["diagnostics"] = dict(llm=diag["llm"], sam2=diag["sam2"])
    else:
        get_bbox = H.notebook_get_bounding_box()
        template = modes[case["task_mode"]]
        steps = case["timesteps"]
        clips = []
        history = None
        box = vp
        abs_paths = [str(cdir / p) for p in paths]
        for k, end in enumerate(steps):
            start = 0 if k == 0 else steps[k - 1]
            task_prompt = template.replace("{history}", "None" if k == 0 else history)
            m = end - start
            prompt, input_ids, rec, out_ids, all_masks, all_scores, text, dec, kw = _gen(
                model, tokenizer, task_prompt, [abs_paths[start:end]], box, None, ["video"])
            selected = [0] + np.linspace(1, m - 1, 15, dtype=int).tolist()
            prefix = f"clip{k}."
            full = set()
            fp = {0, m - 1}
            diag = record_call(rec, prefix, "stream", m, selected, store, full, fp, (h, w))
            store.put(prefix + "llm.output_ids", out_ids.to(torch.int64), "generate() output ids (new tokens only)")
            bm = torch.stack([torch.as_tensor(all_masks[0][t][1]) for t in range(m)])
            store.map(prefix + "official.binary_masks", bm, False, True, k=4, desc="official binary masks (bool)")
            sc = torch.stack([torch.as_tensor(np.asarray(all_scores[0][t])).reshape(1, 1).float() for t in range(m)])
            store.put(prefix + "official.scores", sc, "official all_scores[0][t] stacked")
            last = all_masks[0][m - 1][1][0]
            next_box = get_bbox(last)
            # robustness of the derived box: the same rule on the logits thresholded at +-1e-3
            logits_last = [e for e in rec.of("propagate") if e["frame_idx"] == m - 1][0]["video_res_masks"][0, 0].numpy()
            alt = [get_bbox(logits_last > th) for th in (-1e-3, 1e-3)]
            clips.append(dict(
                segment_idx=k, tensor_prefix=prefix, frame_range=[start, end],
                frames=paths[start:end], visual_prompt=list(map(int, box)), vp_labels=None,
                history_in="None" if k == 0 else history, task_prompt=task_prompt, prompt=prompt,
                prompt_input_ids=input_ids[0].tolist(),
                official_call=dict(call="model.generate(input_ids, images=[current_frames], visual_prompts=[visual_prompt], "
                                        "vp_labels=[None], types=['video'], **gen_kwargs)", gen_kwargs=kw),
                outputs=dict(text=text, output_ids=out_ids[0].tolist(), decoded_with_special_tokens=dec,
                             object_score_logits=sc.reshape(-1).tolist(),
                             mask_area_fraction=diag["sam2"]["mask_area_fraction"], selected_frame_ids=selected,
                             inputs_embeds_len=diag["layout"][-1]["rows"][1], inputs_embeds_layout=diag["layout"]),
                box_from_last_mask_xyxy=next_box,
                box_robustness=dict(stable=all(a == next_box for a in alt), at_minus_1e3=alt[0], at_plus_1e3=alt[1]),
                full_tensor_frames=sorted(full), fingerprint_frames=sorted(fp),
                diagnostics=dict(llm=diag["llm"], sam2=diag["sam2"]),
            ))
            if next_box is None:
                raise RuntimeError(f"{case['name']}: clip {k} lost the object")
            history, box = text, next_box
        man["inputs"] = dict(frames=paths, frame_size_wh=[w, h], task_mode=case["task_mode"],
                             decoding_timesteps=steps, bbox_xywh=case["prompt"]["box_xywh"], visual_prompts=vp,
                             vp_labels=None, types=["video"])
        man["official_call"] = clips[0]["official_call"]
        man["clips"] = clips
    man["fingerprint_stride"] = store.stride
    man["seconds"] = round(time.perf_counter() - t0, 1)
    man["tensors"] = dict(file="outputs.safetensors", index=store.index)
    from safetensors.torch import save_file

    save_file(dict(store.t), str(cdir / "outputs.safetensors"))
    (cdir / "manifest.json").write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n")
    return man


def slim(case_dir: Path) -> None:
    """Shrink a produced case: coarser fingerprints of the perceiver tokens and SAM 2 inputs, semantic tokens
    of the first and last LLM frame of each call only, low-res logits of stream clips as @sub4. Every
    kept tensor is a strided subsample of what the official code produced (x[::a][::b] == x[::a*b]), so
    this only drops values. ``llm.inputs_embeds`` stays full (the shared checker derives the projector
    tensors from it)."""
    import re

    from safetensors.torch import load_file, save_file

    man = json.loads((case_dir / "manifest.json").read_text())
    gold = load_file(str(case_dir / "outputs.safetensors"))
    index = man["tensors"]["index"]
    calls = man["clips"] if man["kind"] == "stream" else [dict(outputs=man["outputs"], tensor_prefix="")]
    keep_sem = set()
    for c in calls:
        ids = c["outputs"].get("selected_frame_ids") or [0]
        keep_sem |= {f"{c['tensor_prefix']}frame{ids[0]:03d}", f"{c['tensor_prefix']}frame{ids[-1]:03d}"}
    out, new_index = OrderedDict(), {}

    def put(name, x, old):
        out[name] = x.contiguous()
        new_index[name] = dict(index[old], shape=list(x.shape))

    for name, x in gold.items():
        m = re.match(r"^(?P<pre>(clip\d+\.)?)(?P<fam>perceiver|projector)\.(?P<f>frame\d+)\.(?P<what>sem_tokens|sem)$", name)
        if m and f"{m['pre']}{m['f']}" not in keep_sem:
            continue
        m = re.match(r"^(?P<pre>(clip\d+\.)?)perceiver\.(?P<f>frame\d+)\.image_tokens@sub(?P<k>\d+)$", name)
        if m and man["kind"] == "stream" and f"{m['pre']}{m['f']}" not in keep_sem:
            continue
        m = re.match(r"^(?P<base>.+\.image_tokens)@sub(?P<k>\d+)$", name)
        if m:
            put(f"{m['base']}@sub{int(m['k']) * 4}", x[:, ::4, :], name)
            continue
        m = re.match(r"^(?P<base>.+\.image_input)@sub(?P<k>\d+)$", name)
        if m and int(m["k"]) < 16:
            put(f"{m['base']}@sub16", x[..., :: 16 // int(m["k"]), :: 16 // int(m["k"])], name)
            continue
        if man["kind"] == "stream" and name.endswith("low_res_mask_logits"):
            put(name + "@sub4", x[..., ::4, ::4], name)
            continue
        put(name, x, name)
    save_file(dict(out), str(case_dir / "outputs.safetensors"))
    man["tensors"]["index"] = new_index
    man["slimmed"] = "see slim() in tools/make_golden_extra.py"
    (case_dir / "manifest.json").write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests/golden_extra"))
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--scratch", default=None, help="where the materialised weights go (default: a temp dir)")
    ap.add_argument("--slim", nargs="*", help="only shrink these already produced case folders")
    args = ap.parse_args()
    if args.slim:
        for c in args.slim:
            slim(Path(c))
        return 0
    torch.set_num_threads(int(os.environ.get("PAM_THREADS", "2")))
    H.setup_official_imports(os.environ.get("PAM_OFFICIAL_DIR"))
    out = Path(args.out)
    (out / "weights/tokenizer").mkdir(parents=True, exist_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
              "special_tokens_map.json"]:
        shutil.copyfile(SHARED / "golden/weights/pam_model" / f, out / "weights/tokenizer" / f)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="pam-extra-"))
    cases = [c for c in CASES if not args.only or c["name"] in args.only]
    index = json.loads((out / "index.json").read_text()) if (out / "index.json").exists() else {}
    index.update(official_pam_commit=(Path(H.OFFICIAL_DIR) / ".pam_commit").read_text().strip()
                 if (Path(H.OFFICIAL_DIR) / ".pam_commit").exists() else None,
                 versions=H.package_versions(), torch_num_threads=torch.get_num_threads())
    index.setdefault("cases", {})
    for shape_name in sorted({c["shape"] for c in cases}):
        mat = build_shape(shape_name, SHAPES[shape_name], out / "weights", scratch)
        yaml_name = f"sam2.1_hiera_{shape_name}.yaml"
        H.use_sam2_fixture(str(mat / "sam2"), yaml_name, str(mat / "sam2" / f"sam2.1_hiera_{shape_name}.pt"))
        tokenizer, model, _, _ = H.load_pam(str(mat / "pam_model"))
        tied = model.lm_head.weight.data_ptr() == model.get_model().embed_tokens.weight.data_ptr()
        print(f"[{shape_name}] loaded: vocab rows {model.get_model().embed_tokens.weight.shape[0]}, lm_head tied {tied}",
              flush=True)
        weights_rel = {"pam_model": f"../weights/{shape_name}/pam_model",
                       "sam2_config": f"../weights/{shape_name}/sam2/{yaml_name}",
                       "sam2_checkpoint": f"../weights/{shape_name}/sam2/sam2.1_hiera_{shape_name}.pt"}
        for case in [c for c in cases if c["shape"] == shape_name]:
            print(f"  running {case['name']} ...", flush=True)
            man = run_case(case, model, tokenizer, weights_rel, out)
            slim(out / case["name"])
            index["cases"][case["name"]] = dict(shape=shape_name, kind=case["kind"], seconds=man["seconds"],
                                                lm_head_tied=tied)
            texts = [man["outputs"]["text"]] if "outputs" in man else [c["outputs"]["text"] for c in man["clips"]]
            print(f"  done in {man['seconds']} s: {texts}", flush=True)
        del model
        H.Recorder  # keep the harness import explicit
    (out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
