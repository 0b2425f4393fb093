"""A small Qwen2-style tokenizer for tiny models: byte-level BPE with Qwen2's pre-tokenizer and
special tokens, trained on the synthetic world's texts and PAM's prompt strings.

It keeps everything PAM's text path relies on: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``
(in that order, after the BPE vocabulary, as in Qwen2.5), no BOS, ``<|im_end|>`` as EOS and
``<|endoftext|>`` as padding, NFC normalisation, and any UTF-8 text still encodes (byte fallback
through the 256 byte-level symbols), so Chinese prompts and histories never fail.
"""

from __future__ import annotations

from typing import Iterable

# Qwen2's pre-tokenizer split pattern (digits one by one, letters in runs, punctuation runs...).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def prompt_corpus() -> list[str]:
    """Every task prompt in both languages inside the chat template, so prompts tokenise compactly."""
    from ..processing import text as text_proc

    out = []
    for name in text_proc.TASKS:
        for lang in text_proc.LANGUAGES:
            kwargs = {}
            if name == "question":
                kwargs["question"] = "What is this?" if lang == "en" else "这是什么？"
            if name == "stream_caption":
                kwargs["history"] = "None"
            out.append(text_proc.build_prompt(name, lang, **kwargs).replace("<image>", " "))
    return out


def shapes_corpus(num_scenes: int = 400, num_videos: int = 60, seed: int = 0, size: int = 128) -> list[str]:
    """Texts of the synthetic shapes world (labels, definitions, captions, event captions), EN + ZH."""
    from .synthetic import format_label_definition, generate_scene, generate_stream

    texts: list[str] = []
    for i in range(num_scenes):
        scene = generate_scene(seed + i, size=size)
        for obj in scene.objects:
            for lang in ("en", "zh"):
                texts += [obj.label[lang], obj.brief_caption[lang], obj.detailed_caption[lang],
                          format_label_definition(obj.label[lang], obj.definition[lang], lang)]
    for i in range(num_videos):
        video = generate_stream(seed + 100_000 + i, num_clips=3, frames_per_clip=8, size=size)
        for obj in video.objects:
            for ev in obj.events:
                texts += [ev.caption[lang] for lang in ("en", "zh") if isinstance(ev.caption, dict)]
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2):
    """Train the byte-level BPE and wrap it as a ``transformers`` fast tokenizer (Qwen2 conventions)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    return fast


def build_shapes_tokenizer(vocab_size: int = 2048, seed: int = 0, num_scenes: int = 400):
    """The tokenizer of the embedded tiny model: shapes-world texts + PAM prompts."""
    texts = shapes_corpus(num_scenes=num_scenes, seed=seed) + prompt_corpus() * 20
    return train_tokenizer(texts, vocab_size=vocab_size)
