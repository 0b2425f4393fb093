"""Server parts whose behaviour the process tests cannot pin down exactly: the encoding cache's
bounds, the worker's queue, and how chat text selects a task."""

from __future__ import annotations

import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")

from perceive_anything.modeling.segmenter import ImageFeatures  # noqa: E402
from perceive_anything.predictor import EncodedImage  # noqa: E402
from perceive_anything.processing import text as text_proc  # noqa: E402
from perceive_anything.server.cache import EncodingCache, encoded_nbytes  # noqa: E402
from perceive_anything.server.errors import Busy  # noqa: E402
from perceive_anything.server.openai_compat import task_for_text  # noqa: E402
from perceive_anything.server.worker import Cancelled, ModelWorker  # noqa: E402


def _encoded(side: int) -> EncodedImage:
    t = torch.zeros(1, 4, side, side)
    return EncodedImage(None, side, side, ImageFeatures(t, t.clone(), t.clone(), t.clone()), 0.0)


def test_cache_is_bounded_by_count_and_bytes():
    one = encoded_nbytes(_encoded(8))
    assert one == 8 * 8 * 3 + 4 * (4 * 8 * 8 * 4)  # pixels + four float32 feature maps
    cache = EncodingCache(max_items=3, max_bytes=10 * one)
    for k in "abcd":
        cache.put(k, _encoded(8))
    assert "a" not in cache and all(k in cache for k in "bcd")  # count bound, oldest out
    cache.get("b")  # b is now the most recent: c goes next
    cache.put("e", _encoded(8))
    assert "c" not in cache and all(k in cache for k in "bde")
    small = EncodingCache(max_items=100, max_bytes=int(2.5 * one))
    for k in "abc":
        small.put(k, _encoded(8))
    assert small.state()["items"] == 2 and small.bytes <= 2.5 * one and "a" not in small
    small.put("big", _encoded(32))  # alone over the budget: kept (the request needs it), the rest go
    assert small.state()["items"] == 1 and "big" in small


def test_worker_refuses_when_full_and_drops_cancelled_jobs():
    worker = ModelWorker(queue_size=2, retry_after_s=3)
    gate, ran = threading.Event(), []
    try:
        running = worker.submit(lambda job: gate.wait(10), "hold")
        while worker.queue_state()["running"] is None:
            time.sleep(0.01)
        a = worker.submit(lambda job: ran.append("a"), "a")
        b = worker.submit(lambda job: ran.append("b"), "b")
        with pytest.raises(Busy) as err:
            worker.submit(lambda job: ran.append("c"), "c")
        assert err.value.status == 429 and err.value.headers == {"Retry-After": "3"}
        worker.cancel(a)  # its client left while it waited
        gate.set()
        running.future.result(5)
        b.future.result(5)
        assert ran == ["b"] and a.future.cancelled()
        state = worker.queue_state()
        assert state["dropped"] == 1 and state["refused"] == 1 and state["done"] == 2
        # a running job stops at its next check once cancelled
        started = threading.Event()

        def long_job(job):
            started.set()
            while True:
                job.check()
                time.sleep(0.01)

        job = worker.submit(long_job, "long")
        started.wait(5)
        worker.cancel(job)
        with pytest.raises(Cancelled):
            job.future.result(5)
        assert worker.queue_state()["stopped"] == 1
    finally:
        gate.set()
        worker.close()


def test_chat_text_selects_a_task_only_on_an_exact_instruction():
    for name, task in text_proc.TASKS.items():
        if task.media != "image":
            continue
        for lang, prompt in task.prompts.items():
            instruction = prompt.removeprefix("<image>\n")
            assert task_for_text(instruction) == (name, lang)
            assert task_for_text("  " + prompt + "\n") == (name, lang)
    assert task_for_text("Classify this subject and provide its label") is None  # no full stop: a question
    assert task_for_text("What colour is it?") is None
    assert task_for_text("Provide a caption for this subject in this video.\nPrevious caption: None") is None
