"""Regions x tasks through the LLM with the shared prefill (PamLanguageModel.generate, SharedPrompt):
each region's chat header and visual block once for all its tasks (optionally the header once for
all regions). Same greedy tokens as the one-pass path and as each (region, task) alone; on the
parity fixture the shared rows stay within the official run's tolerances."""

import importlib.util
import json

import pytest
import torch

from perceive_anything.checkpoints import embedded_model_dir
from perceive_anything.modeling.language import pad_token_rows
from perceive_anything.processing import text as text_proc
from perceive_anything.processing.regions import parse_regions
from perceive_anything.training.synthetic import generate_scene

# Suffixes of different lengths (the label prompt is short, the long question longer than any task),
# so the shared path pads between the visual block and the task text.
TASKS = ["label", "definition", "brief_caption", "question"]
VARIANTS = {"one-pass": dict(shared_prefill=False), "shared": {}, "prefix-once": dict(prefix_once=True)}
QUESTION = "What is the colour of this subject, and where in the picture is it, roughly speaking?"


def _prompt_ids(tokenizer, tasks):
    return [text_proc.tokenize_with_placeholder(
        tokenizer, text_proc.build_prompt(t, "en", question=QUESTION if t == "question" else None)) for t in tasks]


class _PrefillWidths:
    """Sequence lengths the LLM is called with while prefilling (decode steps are length 1)."""

    def __init__(self, llm):
        self.calls = []
        self._handle = llm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is not None:
            self.calls.append(tuple(x.shape[:2]))

    def close(self):
        self._handle.remove()


def _shared_vs_one_pass(lang, tokenizer, generation, blocks, tasks, max_new_tokens):
    ids = _prompt_ids(tokenizer, tasks)
    rows = [(r, t) for r in range(blocks.shape[0]) for t in range(len(tasks))]
    input_ids, attn = pad_token_rows([ids[t] for _, t in rows], 0)
    settings = generation.official_greedy(max_new_tokens=max_new_tokens)
    runs = {}
    for name, kw in VARIANTS.items():
        widths = _PrefillWidths(lang.llm)
        try:
            runs[name] = lang.generate(input_ids, blocks, settings, attention_mask=attn, record_logits=True,
                                       block_index=[r for r, _ in rows], **kw)
        finally:
            widths.close()
        runs[name, "widths"] = widths.calls
    return ids, rows, runs


@pytest.fixture(scope="module")
def embedded():
    if embedded_model_dir() is None:
        pytest.skip("no embedded model in this checkout")
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained()


@pytest.fixture(scope="module")
def scene():
    return generate_scene(5, size=192, num_objects=3)


def _boxes(scene):
    return [[float(v) for v in o.box] for o in scene.objects]


def test_shared_prefill_gives_the_one_pass_tokens_on_the_embedded_model(embedded, scene):
    enc = embedded.encode(scene.image)
    with torch.inference_mode():
        seg = embedded._segment(enc, parse_regions(_boxes(scene), enc.width, enc.height))
        blocks = embedded.model.language.image_visual_block(seg.mid_image_embed, seg.mid_mask_tokens)
        ids, rows, runs = _shared_vs_one_pass(embedded.model.language, embedded.tokenizer, embedded.generation,
                                              blocks, TASKS, max_new_tokens=24)
    flat = runs["one-pass"]
    for name in ("shared", "prefix-once"):
        for row in range(len(rows)):
            assert runs[name].row_tokens(row) == flat.row_tokens(row), (name, rows[row])
        assert torch.allclose(runs[name].step_logits, flat.step_logits, atol=1e-4)
    # What was prefilled: each region's header and block once (or the header once, then each block),
    # the task texts padded to the longest, against every row written out in full.
    header = ids[0].index(text_proc.IMAGE_TOKEN_INDEX)
    tails = [len(x) - header - 1 for x in ids]
    assert len(set(tails)) == len(TASKS)
    nv = blocks.shape[1]
    assert runs["shared", "widths"][:2] == [(3, header + nv), (len(rows), max(tails))]
    assert runs["prefix-once", "widths"][:3] == [(1, header), (3, nv), (len(rows), max(tails))]
    assert runs["one-pass", "widths"][0] == (len(rows), header + nv + max(tails))


def test_perceive_regions_by_tasks_equals_each_alone(embedded, scene):
    """The public call: 3 regions x 4 tasks in one call (split into generate calls of 5 rows, so a
    region's tasks straddle two calls), against every (region, task) asked alone (one row, one pass)."""
    enc = embedded.encode(scene.image)
    together = embedded.perceive(enc, _boxes(scene), task=TASKS, question=QUESTION, max_new_tokens=16, max_batch=5)
    for r, box in enumerate(_boxes(scene)):
        for ti, task in enumerate(TASKS):
            alone = embedded.perceive(enc, [box], task=task, question=QUESTION if task == "question" else None,
                                      max_new_tokens=16)
            assert alone[0].outputs[0].token_ids == together[r].outputs[ti].token_ids, (r, task)


def test_rows_that_share_nothing_take_the_one_pass_path(embedded):
    lang = embedded.model.language
    ids = _prompt_ids(embedded.tokenizer, ["label"])[0]
    block = torch.zeros(1, 5, lang.hidden_size)
    assert lang.shared_prompt(torch.tensor([ids]), block) is None  # one row
    two = torch.zeros(2, 5, lang.hidden_size)
    assert lang.shared_prompt(torch.tensor([ids, ids]), two) is None  # one block per row
    assert lang.shared_prompt(torch.tensor([ids, ids]), two, prefix_once=True) is not None  # the header is shared
    other = [ids[1]] + ids  # a different header
    input_ids, attn = pad_token_rows([ids, other], 0)
    assert lang.shared_prompt(input_ids, block.expand(2, -1, -1), attn, [0, 0]) is None
    prompt = lang.shared_prompt(*pad_token_rows([ids, ids], 0)[:1], block, None, [0, 0])
    assert prompt is not None and prompt.segments.shape[0] == 1 and prompt.segment_of_row.tolist() == [0, 0]
    with pytest.raises(ValueError, match="index the 1 visual blocks"):
        lang.generate(torch.tensor([ids, ids]), block, block_index=[0, 1])


# ------------------------------------------------------------------ parity fixture (../shared/golden)


def test_shared_rows_stay_within_the_official_tolerances(shared_dir):
    """Case A's row decoded in a batch beside other tasks and a second region (the fixture's block
    with the mask tokens of another region): its logits, scores and tokens still match the official
    single-row run within compare.py's tolerances."""
    from safetensors.torch import load_file

    from perceive_anything.checkpoints.pam_official import load_official_pam

    golden = shared_dir / "golden"
    case = golden / "case_A_image_box_detailcap_en"
    if not (case / "manifest.json").is_file():
        pytest.skip("golden case A not available")
    spec = importlib.util.spec_from_file_location("pam_golden_compare", golden / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    man = json.loads((case / "manifest.json").read_text())
    gold = load_file(str(case / man["tensors"]["file"]))
    pam = load_official_pam(golden / "weights" / "pam_model")
    lang = pam.model
    embed, tokens = gold["sam2.frame000.mid_image_embed"], gold["sam2.frame000.mid_mask_tokens_out"]
    task, _ = text_proc.official_mode(man["inputs"]["task_mode"])
    tasks = [task, "label", "brief_caption", "question"]
    with torch.no_grad():
        blocks = lang.image_visual_block(torch.cat([embed, embed]), torch.cat([tokens, tokens.flip(1)]))
    max_new = man["official_call"]["gen_kwargs"]["max_new_tokens"]
    ids, rows, runs = _shared_vs_one_pass(lang, pam.tokenizer, pam.generation, blocks, tasks, max_new_tokens=max_new)
    assert ids[0] == man["inputs"]["prompt_input_ids"]
    shared, flat = runs["shared"], runs["one-pass"]
    assert runs["shared", "widths"][0] == (2, ids[0].index(text_proc.IMAGE_TOKEN_INDEX) + blocks.shape[1])
    for name in ("shared", "prefix-once"):
        for row in range(len(rows)):
            assert runs[name].row_tokens(row) == flat.row_tokens(row), (name, rows[row])
    produced = {
        "llm.output_ids": shared.sequences[0:1],
        "llm.first_token_logits": shared.step_logits[0, 0:1],
        "llm.step_logits": shared.step_logits[:, 0],
        "llm.step_scores": shared.step_scores[:, 0],
    }
    text = text_proc.decode(pam.tokenizer, shared.row_tokens(0))
    rep = compare.compare_case(str(case), produced, texts={"text": text}, only=list(produced))
    assert rep["ok"], compare.format_report(rep, show_pass=False)
    assert rep["counts"]["pass"] == len(produced) + 1
