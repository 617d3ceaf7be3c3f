"""Dynamic batching for the KServe adapter (serve/kserve_server.py): concurrent requests for one
model go through the handler's `handle` together, as TorchServe's batch aggregator sends them.

KServe's Python ModelServer calls a model once per request, and KServe's own batcher is a
separate agent container in front of the server, not a library call. This is an asyncio
micro-batcher with the model-config's `batchSize` and `maxBatchDelay`:
- one consumer per model takes the first waiting request and every other one already queued,
  up to `batchSize`, and runs them in one `handle` call off the event loop;
- it waits up to `maxBatchDelay` for more only when the previous batch held more than one
  request. A lone client never waits (KServe's one-client latency); under load the batches
  fill while a forward runs, and the delay gathers the clients that were answered together and
  send again at once.
A request whose client has gone is skipped in its batch's answers; a batch that raises fails
its own requests only, and the consumer goes on.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, Optional, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """`await submit(item)` returns `run_batch([... item ...])`'s result for that item."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        max_size: int,
        max_delay_s: float,
    ):
        if max_size < 1 or max_delay_s < 0:
            raise ValueError(f"batch size {max_size} and delay {max_delay_s} s")
        self.run_batch, self.max_size, self.max_delay_s = run_batch, max_size, max_delay_s
        self.sizes: list[int] = []  # every batch's size, for tests and benchmarks
        self._queue: Optional[asyncio.Queue[tuple[Item, asyncio.Future[Result]]]] = None
        self._consumer: Optional[asyncio.Task[None]] = None

    async def submit(self, item: Item) -> Result:
        """Queues one request and waits for its own result (or its batch's exception)."""
        if self._queue is None:  # created in the server's running loop, on first use
            self._queue = asyncio.Queue()
            self._consumer = asyncio.create_task(self._consume())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        wait = self.max_delay_s if self.sizes and self.sizes[-1] > 1 else 0.0
        deadline = loop.time() + wait
        while len(batch) < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _consume(self) -> None:
        while True:
            batch = [(item, f) for item, f in await self._next_batch() if not f.done()]
            if not batch:
                continue
            self.sizes.append(len(batch))
            del self.sizes[:-1000]
            try:
                results = await asyncio.to_thread(self.run_batch, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as e:  # noqa: BLE001 - the batch's requests fail, the consumer lives
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
