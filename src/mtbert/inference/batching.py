"""Micro-batching: concurrent requests gathered for a few milliseconds, up to a batch size, and answered
by one model call, so throughput grows with load instead of each request paying for its own pass.

One worker task owns the queue and runs the model in a thread (the event loop keeps accepting
requests meanwhile, and they form the next batch). Requests are grouped by key (the task, or the set
of tasks of a predict-all) because one model call answers one kind of input. The items are Examples the
server built and checked as the request arrived (`server._Edge`): a bad input never reaches a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class _Job:
    key: Hashable
    items: list
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """`await submit(key, items)` -> `run(key, items)`'s answers for these items, computed together with
    other requests of the same key that arrived within `max_wait` seconds (at most `batch_size` items
    a call; a larger request goes alone)."""

    def __init__(self, run: Callable[[Hashable, list], list], batch_size: int = 32, max_wait: float = 0.005):
        self.run = run
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.calls = 0  # model calls made; with `requests`, shows how much batching happens
        self.requests = 0
        self._queue: asyncio.Queue | None = None
        self._held: _Job | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, key: Hashable, items: list) -> list:
        self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        self.requests += 1
        await self._queue.put(_Job(key, list(items), future))
        return await future

    def _ensure_worker(self) -> None:
        # started on first use in the running loop (an app may be driven without its lifespan, e.g. by
        # an ASGI test transport); a new loop gets a new queue and worker
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._work())

    async def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        if timeout is None:
            return await self._queue.get()
        try:
            if timeout <= 0:  # past the wait, still take what is already queued
                return self._queue.get_nowait()
            return await asyncio.wait_for(self._queue.get(), timeout)
        except (asyncio.QueueEmpty, TimeoutError):
            return None

    async def _gather(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        jobs = [await self._next(None)]
        size = len(jobs[0].items)
        deadline = loop.time() + self.max_wait
        while size < self.batch_size:
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            if size + len(job.items) > self.batch_size:
                self._held = job  # first of the next batch
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _work(self) -> None:
        while True:
            jobs = await self._gather()
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                await self._answer(key, group)

    def _call(self, key: Hashable, items: list) -> list:
        self.calls += 1
        return self.run(key, items)

    async def _answer(self, key: Hashable, group: list[_Job]) -> None:
        live = [job for job in group if not job.future.done()]  # a requester may have gone away
        if not live:
            return
        try:
            out = await asyncio.to_thread(self._call, key, [x for job in live for x in job.items])
        except Exception as err:
            if len(live) > 1:
                # one request's bad input must not fail the others it was batched with: answer each
                # alone, so the error reaches only its own requester (with its own input numbers)
                for job in live:
                    await self._answer(key, [job])
                return
            if not live[0].future.done():
                live[0].future.set_exception(err)
            return
        start = 0
        for job in live:
            if not job.future.done():
                job.future.set_result(out[start:start + len(job.items)])
            start += len(job.items)
