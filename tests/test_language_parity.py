"""Parity of the language side (perceiver, projectors, splicing, LLM, decoding) with the official run.

The SAM 2 side is replaced by the fixture's own ``mid_image_embed`` / ``mid_mask_tokens_out``, so only
this package's language code is under test. Tolerances are ``compare.py``'s defaults.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch


def _shared_dir() -> Path:
    return Path(os.environ.get("PAM_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


GOLDEN = _shared_dir() / "golden"
pytestmark = pytest.mark.skipif(not (GOLDEN / "compare.py").exists(), reason="shared golden fixtures not available")

LANGUAGE_SIDE = ["perceiver.*", "projector.*", "llm.*"]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("pam_golden_compare", GOLDEN / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pam():
    from perceive_anything.checkpoints.pam_official import load_official_pam

    return load_official_pam(GOLDEN / "weights" / "pam_model")


def _case(name):
    from safetensors.torch import load_file

    d = GOLDEN / name
    man = json.loads((d / "manifest.json").read_text())
    return d, man, load_file(str(d / man["tensors"]["file"]))


def _prompt_ids(pam, man):
    from perceive_anything.processing.text import build_prompt, official_mode, tokenize_with_placeholder

    task, lang = official_mode(man["inputs"]["task_mode"])
    prompt = build_prompt(task, lang)
    assert prompt == man["inputs"]["prompt"]
    ids = tokenize_with_placeholder(pam.tokenizer, prompt)
    assert ids == man["inputs"]["prompt_input_ids"]
    return torch.tensor([ids])


def _settings(pam, man):
    kw = man["official_call"]["gen_kwargs"]
    assert kw["do_sample"] is False and kw["num_beams"] == 1
    return pam.generation.official_greedy(max_new_tokens=kw["max_new_tokens"])


def _check(compare, case_dir, produced, text, expect_rows):
    rep = compare.compare_case(str(case_dir), produced, texts={"text": text}, only=list(produced))
    print(compare.format_report(rep))
    assert rep["ok"], compare.format_report(rep, show_pass=False)
    assert rep["counts"]["pass"] == expect_rows
    return rep


def test_checkpoint_load_report(pam):
    r = pam.report
    assert (r.embedding_rows_in_file, r.embedding_rows_kept) == (2432, 2352)
    assert not r.lm_head_in_file and r.ignored_keys == []
    m = pam.model
    assert m.vocab_size == 2352 and m.llm.lm_head.weight is m.llm.model.embed_tokens.weight
    assert m.llm.config._attn_implementation == "sdpa"
    assert pam.generation.repetition_penalty == 1.05 and pam.generation.eos_token_id == [2351, 2349]


def test_case_a_image_parity(pam, compare):
    from perceive_anything.processing.text import decode

    case_dir, man, gold = _case("case_A_image_box_detailcap_en")
    m = pam.model
    ids = _prompt_ids(pam, man)
    with m.capturing() as cap, torch.no_grad():
        block = m.image_visual_block(gold["sam2.frame000.mid_image_embed"], gold["sam2.frame000.mid_mask_tokens_out"])
        assert block.shape == (1, pam.config.image_tokens_per_region, 128)
        out = m.generate(ids, block, _settings(pam, man))
    text = decode(pam.tokenizer, out.sequences[0])
    assert text == man["outputs"]["text"]
    assert cap["llm.inputs_embeds"].shape[1] == man["outputs"]["inputs_embeds_len"]
    # every language-side tensor of the fixture, plus the virtual projector image output, plus the text
    names = {n for n in compare.load_case(str(case_dir))[1] if n.split(".")[0] in ("perceiver", "projector", "llm")}
    assert names <= set(cap)
    _check(compare, case_dir, {k: cap[k] for k in names}, text, len(names) + 1)


def test_case_c_video_parity(pam, compare):
    """Video: the fixture stores full SAM 2 mid features only for frame 19 (see ``full_tensor_frames``).

    Frame 19 runs through the perceiver (scale 1/4 + proj) and both projectors; for the other LLM frames
    the semantic tokens (stored in full) go through ``mm_projector_semT`` and the projected image tokens
    are the fixture's own (the virtual ``projector.frameNNN.image`` rows of ``llm.inputs_embeds``).
    The block is assembled, spliced and decoded by this package.
    """
    from perceive_anything.processing.text import decode

    case_dir, man, gold = _case("case_C_video20_box_cap_en")
    _, gold_all = compare.load_case(str(case_dir))
    m = pam.model
    ids = _prompt_ids(pam, man)
    selected = man["outputs"]["selected_frame_ids"]
    full = man["full_tensor_frames"]["mid_image_embed"]
    assert selected[0] == 0 and len(selected) == 16 and full
    with m.capturing() as cap, torch.no_grad():
        projected = []
        for fid in selected:
            if fid in full:
                embed = gold[f"sam2.frame{fid:03d}.mid_image_embed"]
                tokens = gold[f"sam2.frame{fid:03d}.mid_mask_tokens_out"]
                shuffle = pam.config.perceiver.image_shuffle if fid == 0 else pam.config.perceiver.frame_shuffle
                img, sem = m._frame_tokens(embed, tokens, shuffle, fid)
                projected.append((img[0], sem[0]))
            else:
                sem = m.mm_projector_semT(gold[f"perceiver.frame{fid:03d}.sem_tokens"])
                cap[f"projector.frame{fid:03d}.sem"] = sem.clone()
                img = torch.from_numpy(gold_all[f"projector.frame{fid:03d}.image"].copy())
                projected.append((img[0], sem[0]))
        block = m.assemble_block(projected, video=True)
        assert block.shape[0] == sum(pam.config.frame_tokens(first=(f == 0)) for f in selected)
        out = m.generate(ids, block[None], _settings(pam, man))
    text = decode(pam.tokenizer, out.sequences[0])
    assert text == man["outputs"]["text"]
    assert cap["llm.inputs_embeds"].shape[1] == man["outputs"]["inputs_embeds_len"]
    produced = {k: v for k, v in cap.items() if not (k.startswith("projector.") and k.endswith(".image") and
                                                        int(k.split(".")[1][5:]) not in full)}
    expected = [f"projector.frame{f:03d}.sem" for f in selected] + [
        f"{fam}.frame{f:03d}.{w}" for f in full for fam, w in
        (("perceiver", "sem_tokens"), ("perceiver", "image_tokens"), ("projector", "image"))
    ] + ["llm.input_ids", "llm.inputs_embeds", "llm.first_token_logits", "llm.step_logits", "llm.step_scores",
         "llm.output_ids"]
    assert sorted(produced) == sorted(expected)
    _check(compare, case_dir, produced, text, len(expected) + 1)


def test_video_visual_block_layout(pam):
    """``video_visual_block`` on random features gives the layout of the fixture's manifest."""
    _, man, _ = _case("case_C_video20_box_cap_en")
    m = pam.model
    f = pam.config.segmenter.feature_size
    g = torch.Generator().manual_seed(0)
    frames = [(torch.randn(1, 256, f, f, generator=g), torch.randn(1, 2, 256, generator=g)) for _ in range(3)]
    with torch.no_grad():
        block = m.video_visual_block(frames, [True, False, False], [0, 5, 9])
    layout = [seg for seg in man["outputs"]["inputs_embeds_layout"] if seg["what"] != "text"]
    start = layout[0]["rows"][0]
    for seg in layout:
        if seg["frame"] > 2:
            break
        r0, r1 = (x - start for x in seg["rows"])
        if seg["what"] in ("image_newline", "semT_newline", "frame_newline"):
            assert torch.equal(block[r0], getattr(m, seg["what"]).detach())
    assert block.shape[0] == pam.config.frame_tokens(True) + 2 * pam.config.frame_tokens(False)
