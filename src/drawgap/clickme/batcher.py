"""Micro-batching of partner queries: many participants, one network pass.

Requests wait in a queue; one worker takes everything queued (up to `max_batch`), reveals and classifies it
as one batch on a single inference thread, and answers each request. Under light load a batch is one
request, so latency is one forward pass; under heavy load batching keeps throughput up and the queue short.
No library offers this for an in-process torch model without a separate serving stack, hence this class.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Sequence

import numpy as np

from drawgap.clickme.partner import Guess, Partner


class PartnerBatcher:
    def __init__(self, partner: Partner, brush_px: int, max_batch: int = 64, nothing_yet: bool = True):
        self.partner = partner
        self.brush_px = brush_px
        self.nothing_yet = nothing_yet  # GameConfig.partner_nothing_yet
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # One thread: torch parallelises inside the forward pass; two passes at once would only contend.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickme-partner")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def guess(self, image: np.ndarray, points: Sequence[Sequence[int]], category: str) -> Guess:
        if self._queue is None:
            raise RuntimeError("PartnerBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(((image, points, category), future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(q, f) for q, f in batch if not f.done()]  # a client that hung up needs no answer
            if not live:
                continue
            try:
                guesses = await loop.run_in_executor(self._executor, partial(
                    self.partner.guess_points, [q for q, _ in live], self.brush_px, nothing_yet=self.nothing_yet))
            except Exception as exc:  # answer every waiter with the failure rather than hang them
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), g in zip(live, guesses):
                if not f.done():
                    f.set_result(g)
