"""The one thread that runs the model, fed by a bounded queue.

PyTorch on one device gains nothing from running two requests at once, and the model object is
not thread safe (``PerceiveAnything`` keeps the last encoding), so every model call goes through this
single worker. The event loop only waits on futures; a full queue is refused at once (429) instead
of letting latency grow without bound; a job whose client went away is removed from the queue, or,
when already running, stopped at its next token or frame.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any, Callable

from .errors import Busy


class Cancelled(Exception):
    """Raised inside a running job (from its callbacks) once its client has gone."""


class Job:
    def __init__(self, fn: Callable[["Job"], Any], name: str):
        self.fn = fn
        self.name = name
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.cancelled = threading.Event()

    def check(self) -> None:
        """Call from inside the job (e.g. per generated token) to stop work nobody waits for."""
        if self.cancelled.is_set():
            raise Cancelled(self.name)


class ModelWorker:
    def __init__(self, queue_size: int, retry_after_s: int):
        self.capacity = queue_size
        self.retry_after_s = retry_after_s
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running: Job | None = None
        self.stats = {"done": 0, "failed": 0, "dropped": 0, "stopped": 0, "refused": 0}
        self._thread = threading.Thread(target=self._loop, name="pam-model-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Job], Any], name: str = "job") -> Job:
        """Queue ``fn(job)``; raises :class:`Busy` (429) when the queue is full."""
        job = Job(fn, name)
        with self._cond:
            if self._closed:
                raise Busy("the server is shutting down", None, status=503, type="server_error")
            if len(self._pending) >= self.capacity:
                self.stats["refused"] += 1
                raise Busy(
                    f"the model queue is full ({self.capacity} requests waiting); retry in {self.retry_after_s} s",
                    None, headers={"Retry-After": str(self.retry_after_s)},
                )
            self._pending.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client is gone: drop the job if it still waits, else make its next ``check`` raise."""
        job.cancelled.set()
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return
            self.stats["dropped"] += 1
        job.future.cancel()

    async def run(self, fn: Callable[[Job], Any], name: str = "job", disconnected=None) -> Any:
        """Submit and await the result without blocking the event loop. ``disconnected`` is an async
        callable polled while waiting (``request.is_disconnected``): when it turns true the job is dropped."""
        job = self.submit(fn, name)
        return await self.wait(job, disconnected)

    async def wait(self, job: Job, disconnected=None, poll_s: float = 0.2) -> Any:
        fut = asyncio.wrap_future(job.future)
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=poll_s if disconnected else None)
                if done:
                    return fut.result()
                if disconnected is not None and await disconnected():
                    self.cancel(job)
                    raise Cancelled(job.name)
        except asyncio.CancelledError:
            self.cancel(job)
            raise

    def queue_state(self) -> dict[str, Any]:
        with self._cond:
            return {"pending": len(self._pending), "capacity": self.capacity,
                    "running": self.running.name if self.running else None, **self.stats}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._pending:
                job.future.cancel()
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                self.running = job
            if not job.future.set_running_or_notify_cancel():
                self.running = None
                continue
            try:
                job.check()
                result = job.fn(job)
            except Cancelled as exc:
                self.stats["stopped"] += 1
                job.future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, never kills the worker
                self.stats["failed"] += 1
                job.future.set_exception(exc)
            else:
                self.stats["done"] += 1
                job.future.set_result(result)
            finally:
                self.running = None
