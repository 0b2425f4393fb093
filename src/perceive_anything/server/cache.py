"""An LRU of encoded images shared by all requests, bounded by count and by bytes."""

from __future__ import annotations

import collections
import dataclasses
import threading

import torch


def encoded_nbytes(enc) -> int:
    """Bytes an ``EncodedImage`` holds: its feature tensors plus the decoded RGB pixels."""
    total = enc.width * enc.height * 3
    feats = enc.features
    values = [getattr(feats, f.name) for f in dataclasses.fields(feats)] if dataclasses.is_dataclass(feats) else []
    for v in values:
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
    return total


class EncodingCache:
    def __init__(self, max_items: int, max_bytes: int):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, tuple[object, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: str, enc) -> None:
        size = encoded_nbytes(enc)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            self._items[key] = (enc, size)
            self.bytes += size
            # The newest entry stays even if it alone exceeds the byte budget: the request needs it.
            while len(self._items) > 1 and (len(self._items) > self.max_items or self.bytes > self.max_bytes):
                _, (_, old) = self._items.popitem(last=False)
                self.bytes -= old

    def state(self) -> dict:
        with self._lock:
            return {"items": len(self._items), "bytes": self.bytes, "max_items": self.max_items,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}
