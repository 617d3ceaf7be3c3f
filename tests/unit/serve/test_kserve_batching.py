"""serve/kserve_batching.MicroBatcher: the KServe adapter's dynamic batching."""

import asyncio
import threading
import time

import pytest

from serve.kserve_batching import MicroBatcher


class Forward:
    """A stand-in forward of fixed duration that records each batch (the batcher's callee)."""

    def __init__(self, seconds: float = 0.02, fail_on: object = None):
        self.seconds, self.fail_on, self.batches = seconds, fail_on, []
        self.threads: set[int] = set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        if self.fail_on in items:
            raise RuntimeError("the forward failed")
        return [item * 10 for item in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_up_to_the_size_each_gets_its_own_answer():
    forward = Forward()

    async def main():
        batcher = MicroBatcher(forward, max_size=4, max_delay_s=0.005)
        return batcher, await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    batcher, answers = run(main())
    assert answers == [i * 10 for i in range(10)]
    assert max(len(b) for b in forward.batches) == 4 and len(forward.batches) < 10
    assert sorted(i for b in forward.batches for i in b) == list(range(10))
    assert batcher.sizes == [len(b) for b in forward.batches]
    assert threading.get_ident() not in forward.threads  # off the event loop


def test_a_lone_client_never_waits_for_the_delay():
    forward = Forward(seconds=0.0)

    async def main():
        batcher = MicroBatcher(forward, max_size=8, max_delay_s=0.5)
        start = time.perf_counter()
        for i in range(5):
            assert await batcher.submit(i) == i * 10
        return time.perf_counter() - start

    assert run(main()) < 0.5  # five sequential requests, not 5 x 0.5 s
    assert forward.batches == [[i] for i in range(5)]


@pytest.mark.parametrize(("delay", "last"), [(0.1, [[20, 21]]), (0.0, [[20], [21]])])
def test_after_a_shared_batch_the_delay_gathers_the_next_one(delay, last):
    forward = Forward(seconds=0.01)

    async def main():
        batcher = MicroBatcher(forward, max_size=8, max_delay_s=delay)

        async def late(i, after):
            await asyncio.sleep(after)
            return await batcher.submit(i)

        await asyncio.gather(batcher.submit(0), batcher.submit(1))  # queued together: [0, 1]
        # The last batch held more than one request: the next one waits for more.
        return await asyncio.gather(late(20, 0), late(21, 0.03))

    assert run(main()) == [200, 210]
    assert forward.batches == [[0, 1], *last]


def test_a_failing_batch_fails_its_own_requests_and_the_batcher_goes_on():
    forward = Forward(fail_on=3)

    async def main():
        batcher = MicroBatcher(forward, max_size=8, max_delay_s=0.0)
        got = await asyncio.gather(
            *(batcher.submit(i) for i in range(3, 6)), return_exceptions=True
        )
        return got, await batcher.submit(7)

    got, after = run(main())
    failed = [g for g in got if isinstance(g, RuntimeError)]
    assert failed and all(str(g) == "the forward failed" for g in failed)
    assert after == 70


def test_a_request_whose_client_left_is_skipped():
    forward = Forward(seconds=0.05)

    async def main():
        batcher = MicroBatcher(forward, max_size=1, max_delay_s=0.0)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)  # 1 is running
        gone = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await first, await batcher.submit(3)

    assert run(main()) == (10, 30)
    assert [2] not in forward.batches


def test_sizes_and_delays_are_checked():
    with pytest.raises(ValueError):
        MicroBatcher(Forward(), max_size=0, max_delay_s=0.0)
