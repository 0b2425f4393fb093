"""Prompts, chat template, placeholder tokenisation, decoding and output parsing (reference §8).

The prompt strings are the official notebooks' ``task_modes`` verbatim; they are what the released
checkpoints were trained on, so a single changed character changes the model's behaviour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IMAGE_TOKEN",
    "IMAGE_TOKEN_INDEX",
    "DEFAULT_SYSTEM_PROMPT",
    "LANGUAGES",
    "TASKS",
    "Task",
    "get_task",
    "task_prompt",
    "chat_prompt",
    "build_prompt",
    "build_prompts",
    "official_mode",
    "tokenize_with_placeholder",
    "decode",
    "parse_output",
    "load_tokenizer",
    "IncrementalDecoder",
]

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
LANGUAGES = ("en", "zh")
_LANGUAGE_ALIASES = {"en": "en", "zh": "zh", "ch": "zh", "cn": "zh", "zh-cn": "zh", "zh_cn": "zh"}


@dataclass(frozen=True)
class Task:
    """A PAM task. ``prompts`` maps a language to the user message; ``{history}`` (streaming) and
    ``{question}`` (free question) are filled with ``str.replace`` so braces in the values are safe."""

    name: str
    prompts: dict[str, str]
    media: str  # "image", "video" or "any"
    fields: tuple[str, ...]
    official_modes: dict[str, str]
    description: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "label",
            {"en": "<image>\nClassify this subject and provide its label.", "zh": "<image>\n对该目标对象进行分类并提供标签"},
            "image",
            ("label",),
            {"en": "recognize_en", "zh": "recognize_ch"},
            "recognise the region: its category label",
        ),
        Task(
            "definition",
            {
                "en": "<image>\nClassify this subject and provide the label and its definition.",
                "zh": "<image>\n对该目标对象进行分类并提供标签和名词功能解释",
            },
            "image",
            ("label", "definition"),
            {"en": "explain_en", "zh": "explain_ch"},
            "explain the region: label plus definition / function",
        ),
        Task(
            "brief_caption",
            {"en": "<image>\nProvide a concise caption for this subject.", "zh": "<image>\n对该目标对象提供一个概括的描述"},
            "image",
            ("caption",),
            {"en": "brief_cap_en", "zh": "brief_cap_ch"},
            "short caption of the region",
        ),
        Task(
            "detailed_caption",
            {
                "en": "<image>\nProvide a comprehensive and detailed description for this subject.",
                "zh": "<image>\n对该目标对象提供一个全面且详细的描述",
            },
            "image",
            ("caption",),
            {"en": "detail_cap_en", "zh": "detail_cap_ch"},
            "detailed description of the region",
        ),
        Task(
            "video_caption",
            {
                "en": "<image>\nProvide a caption for this subject in this video.\nPrevious caption: None",
                "zh": "<image>\n对该视频中的目标对象提供一个描述。\n历史描述：无",
            },
            "video",
            ("caption",),
            {"en": "video_cap_en", "zh": "video_cap_ch"},
            "caption of the tracked region over a whole video (offline)",
        ),
        Task(
            "stream_caption",
            {
                "en": "<image>\nProvide a caption for this subject in this video.\nPrevious caption: {history}",
                "zh": "<image>\n对该视频中的目标对象提供一个描述。\n历史描述：{history}",
            },
            "video",
            ("caption",),
            {"en": "video_cap_en", "zh": "video_cap_ch"},
            "caption of one clip of a stream, conditioned on the previous clip's caption",
        ),
        Task(
            "question",
            {"en": "<image>\n{question}", "zh": "<image>\n{question}"},
            "any",
            ("answer",),
            {},
            "free-form question about the region",
        ),
    )
}

# The official notebooks' mode names -> (task, language).
_OFFICIAL_MODES = {
    mode: (task.name, lang)
    for task in TASKS.values()
    if task.name != "stream_caption"
    for lang, mode in task.official_modes.items()
}


def _lang(lang: str) -> str:
    key = str(lang).strip().lower()
    if key not in _LANGUAGE_ALIASES:
        raise ValueError(f"unknown language {lang!r}; valid languages: {', '.join(LANGUAGES)} (alias 'ch' for 'zh')")
    return _LANGUAGE_ALIASES[key]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


def official_mode(mode: str) -> tuple[str, str]:
    """Map an official notebook mode name (``detail_cap_en``, ``recognize_ch``, ...) to (task, lang)."""
    try:
        return _OFFICIAL_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown official mode {mode!r}; valid modes: {', '.join(sorted(_OFFICIAL_MODES))}") from None


def task_prompt(task: str, lang: str = "en", *, history: str | None = None, question: str | None = None) -> str:
    """The user message of a task, starting with ``<image>\\n``.

    ``stream_caption`` takes ``history`` (the previous clip's caption); the first clip uses ``"None"``
    in both languages, as the official streaming notebook does. ``question`` requires ``question``.
    """
    t = get_task(task)
    text = t.prompts[_lang(lang)]
    if t.name == "stream_caption":
        text = text.replace("{history}", "None" if history is None else str(history))
    elif history is not None:
        raise ValueError(f"task {task!r} takes no history (use 'stream_caption')")
    if t.name == "question":
        if question is None or not str(question).strip():
            raise ValueError("task 'question' needs a non-empty question")
        if IMAGE_TOKEN in question:
            raise ValueError(f"the question must not contain {IMAGE_TOKEN!r}; it is added in front")
        text = text.replace("{question}", str(question))
    elif question is not None:
        raise ValueError(f"task {task!r} takes no question (use 'question')")
    return text


def chat_prompt(
    user_message: str,
    system: str = DEFAULT_SYSTEM_PROMPT,
    history: Sequence[tuple[str, str]] = (),
) -> str:
    """The ``qwen_2`` conversation template (ChatML) ending with an open assistant turn.

    ``history`` holds earlier (user, assistant) pairs of a multi-turn conversation.
    """
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    for user, assistant in history:
        parts.append(f"<|im_start|>user\n{user}<|im_end|>\n")
        parts.append(f"<|im_start|>assistant\n{assistant}<|im_end|>\n")
    parts.append(f"<|im_start|>user\n{user_message}<|im_end|>\n<|im_start|>assistant\n")
    return "".join(parts)


def build_prompt(task: str, lang: str = "en", *, history: str | None = None, question: str | None = None,
                 system: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """Full chat prompt of a task (what the official notebooks feed to ``tokenizer_image_token``)."""
    return chat_prompt(task_prompt(task, lang, history=history, question=question), system=system)


def build_prompts(tasks: Sequence[str], lang: str = "en", *, history: str | None = None,
                  question: str | None = None) -> list[str]:
    """Chat prompts of several tasks asked together about one region: the free ``question`` goes to
    the ``question`` task only, so it can be asked next to the other tasks."""
    if "question" in tasks and not (question and question.strip()):
        raise ValueError("task 'question' needs question='...' (the free question to ask about the region)")
    return [build_prompt(t, lang, history=history, question=question if t == "question" else None) for t in tasks]


def tokenize_with_placeholder(tokenizer, prompt: str, image_token: str = IMAGE_TOKEN,
                              image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Split on ``<image>``, tokenise every chunk on its own and join with ``-200``.

    Chunks must be tokenised separately: e.g. ``"user\\n" + "\\nProvide"`` gives ``[..., 198] + [198, ...]``
    whereas the joined text would merge into the single ``"\\n\\n"`` token. A BOS token (none for Qwen)
    is kept once, at the start.
    """
    chunks = prompt.split(image_token)
    ids: list[int] = []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(int(image_token_index))
        ids.extend(tokenizer(chunk, add_special_tokens=(i == 0)).input_ids)
    return ids


def decode(tokenizer, ids) -> str:
    """Official decoding: ``batch_decode(skip_special_tokens=True)[0].strip()``. ``ids`` is one row
    (list or 1-D tensor) or a (1, n) tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], (list, tuple)):
        ids = ids[0]
    return tokenizer.batch_decode([list(ids)], skip_special_tokens=True)[0].strip()


class IncrementalDecoder:
    """Turns a stream of token ids into text deltas for display. Text ending in U+FFFD (a token that
    stops inside a UTF-8 sequence) is held back until the following tokens complete it."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._emitted = 0

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta = text[self._emitted:]
        self._emitted = len(text)
        return delta

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        delta = text[self._emitted:]
        self._emitted = len(text)
        return delta


# Field markers a label/definition answer may carry ("Label: ...", "Definition: ...", "标签：...").
_LABEL_MARK = re.compile(r"^\s*(?:label|category|class|name|标签|类别|名称)\s*[:：]\s*", re.IGNORECASE)
_DEF_MARK = re.compile(
    r"(?:^|\n|[.;。；]\s*)\s*(?:definition|function|explanation|description|定义|功能|解释|名词功能解释|描述)\s*[:：]\s*",
    re.IGNORECASE,
)
_SPLITTERS = ("\n", "：", ":", " - ", " — ", "。", ". ", "，", ", ", ";", "；")


def _strip_label(label: str) -> str:
    return label.strip().strip("\"'“”‘’").rstrip(".。").strip()


def parse_output(task: str, text: str) -> dict[str, str]:
    """Structure a decoded answer. Every result has ``text`` (the input) plus the task's fields:

    * ``label``: ``label`` = the text without an optional ``Label:`` marker, quotes or final full stop.
    * ``definition``: ``label`` and ``definition``. The released code has no output format, so the rule
      is: explicit markers (``Label:``/``Definition:``, ``标签：``/``定义：``/``功能：``/``解释：``) win; else the
      text is split at the first of newline, colon (ASCII or full-width), dash, sentence end or comma
      that follows a short head (<= 8 words / 24 characters); else the whole text is the label.
    * captions: ``caption``; ``question``: ``answer``.
    """
    t = get_task(task)
    text = str(text)
    body = text.strip()
    if t.name == "label":
        return {"text": text, "label": _strip_label(_LABEL_MARK.sub("", body, count=1))}
    if t.name == "definition":
        return {"text": text, **_split_label_definition(body)}
    if t.name == "question":
        return {"text": text, "answer": body}
    return {"text": text, "caption": body}


def _split_label_definition(body: str) -> dict[str, str]:
    m = _DEF_MARK.search(body)
    if m is not None and m.start() > 0:
        head, definition = body[: m.start()], body[m.end():]
        return {"label": _strip_label(_LABEL_MARK.sub("", head, count=1)), "definition": definition.strip()}
    unmarked = _LABEL_MARK.sub("", body, count=1)
    best = None
    for sep in _SPLITTERS:
        pos = unmarked.find(sep)
        if pos <= 0:
            continue
        head = unmarked[:pos]
        if len(head.split()) > 8 or len(head) > 24 and " " not in head.strip():
            continue
        if best is None or pos < best[0]:
            best = (pos, sep)
    if best is None:
        return {"label": _strip_label(unmarked), "definition": ""}
    pos, sep = best
    rest = unmarked[pos + len(sep):].strip()
    return {"label": _strip_label(unmarked[:pos]), "definition": rest}


def load_tokenizer(folder: str | Path):
    """The Hugging Face fast tokenizer of a PAM folder, loaded offline.

    The folder's ``config.json`` (``llava_qwen``) is not a transformers model type, so the tokenizer
    class is taken from ``tokenizer_config.json`` instead of going through ``AutoConfig``.
    """
    folder = Path(folder)
    if not (folder / "tokenizer.json").exists() and not (folder / "vocab.json").exists():
        raise FileNotFoundError(f"no tokenizer files (tokenizer.json / vocab.json) in {folder}")
    cls = None
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.exists():
        name = json.loads(cfg_path.read_text()).get("tokenizer_class")
        if name:
            try:
                from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

                cls = tokenizer_class_from_name(name) or tokenizer_class_from_name(name.removesuffix("Fast") + "Fast")
            except Exception:  # unknown class names fall back to the generic fast tokenizer
                cls = None
    if cls is None:
        from transformers import PreTrainedTokenizerFast as cls  # noqa: N813
    return cls.from_pretrained(str(folder), local_files_only=True)
