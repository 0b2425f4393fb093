"""LLM-judge scoring through any OpenAI-compatible ``/v1/chat/completions`` endpoint.

A :class:`Judge` sends one user message per judgement (the prompts are in the benchmark adapters and
written out in docs/evaluation.md), retries transient failures with exponential back-off, and keeps every
answer in a JSONL cache keyed by (judge model, prompt), so a re-run or a resumed run never pays for the
same judgement twice. Every score computed with it records the judge model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["Judge", "JudgeConfig", "JudgeError"]


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or kept failing; generated outputs are unaffected."""


class JudgeConfig:
    """Retry policy: ``attempts`` tries in all, waits ``base_delay * 2**k`` capped at ``max_delay``, +-``jitter``."""

    def __init__(self, attempts: int = 5, base_delay: float = 5.0, max_delay: float = 60.0, jitter: float = 0.1,
                 timeout: float = 120.0, max_tokens: int = 1024, temperature: float = 0.0):
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts, self.base_delay, self.max_delay, self.jitter = attempts, base_delay, max_delay, jitter
        self.timeout, self.max_tokens, self.temperature = timeout, max_tokens, temperature


class Judge:
    def __init__(self, url: str, model: str, cache_path: str | Path, api_key: str | None = None,
                 config: JudgeConfig | None = None, sleep: Callable[[float], None] = time.sleep):
        try:
            import openai
        except ImportError as err:  # pragma: no cover - depends on the extra
            raise ImportError("the LLM judge needs the openai client: pip install 'perceive-anything[evaluation]'") from err
        if not model:
            raise ValueError("--judge-model is required with --judge-url")
        self.url, self.model = url.rstrip("/"), model
        self.config = config or JudgeConfig()
        self._openai = openai
        # Our own retry loop (documented policy, one error message at the end), not the client's.
        self.client = openai.OpenAI(base_url=self.url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                    max_retries=0, timeout=self.config.timeout)
        self.cache_path = Path(cache_path)
        self.cache: dict[str, str] = {}
        self._sleep = sleep
        if self.cache_path.exists():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line of a killed run
                self.cache[rec["key"]] = rec["response"]

    def key(self, prompt: str, image: bytes | None = None) -> str:
        parts = [self.model, prompt] + ([hashlib.sha256(image).hexdigest()] if image else [])
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    def ask(self, prompt: str, image: bytes | None = None) -> str:
        """The judge's answer to ``prompt`` (from the cache when it was asked before). ``image`` (PNG
        bytes) is sent along as an ``image_url`` part, for judges that see images."""
        k = self.key(prompt, image)
        if k in self.cache:
            return self.cache[k]
        answer = self._request(prompt, image)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self.cache_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": k, "model": self.model, "prompt": prompt, "response": answer},
                               ensure_ascii=False) + "\n")
        self.cache[k] = answer
        return answer

    def _retryable(self, err: Exception) -> bool:
        o = self._openai
        if isinstance(err, (o.APIConnectionError, o.APITimeoutError, o.RateLimitError, o.InternalServerError)):
            return True
        return isinstance(err, o.APIStatusError) and err.status_code in (408, 409, 429) or (
            isinstance(err, o.APIStatusError) and err.status_code >= 500)

    def _request(self, prompt: str, image: bytes | None = None) -> str:
        cfg = self.config
        content: Any = prompt
        if image is not None:
            url = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
            content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]
        last: Exception | None = None
        for attempt in range(cfg.attempts):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": content}],
                    max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                )
                content = resp.choices[0].message.content
                if content is None:
                    raise JudgeError(f"judge {self.model} at {self.url} returned an empty message")
                return content
            except self._openai.OpenAIError as err:
                last = err
                if not self._retryable(err) or attempt == cfg.attempts - 1:
                    break
                delay = min(cfg.base_delay * 2**attempt, cfg.max_delay)
                self._sleep(max(0.0, delay * (1 + random.uniform(-cfg.jitter, cfg.jitter))))
        raise JudgeError(f"judge {self.model} at {self.url} failed after {attempt + 1} attempt(s): "
                         f"{type(last).__name__}: {last}")
