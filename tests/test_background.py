"""util/background.py: the reader thread keeps order and hands its errors to the consumer;
the writer thread runs every task in order and raises the first failure."""

import threading
import time

import pytest

from util.background import BackgroundWriter, prefetched


def test_prefetched_yields_every_item_in_order_from_another_thread():
    threads = []

    def produce():
        for i in range(50):
            threads.append(threading.current_thread().name)
            yield i

    assert list(prefetched(produce(), depth=4)) == list(range(50))
    assert set(threads) == {"prefetch"}


def test_prefetched_reads_ahead_while_the_consumer_works():
    produced = []

    def produce():
        for i in range(6):
            produced.append(i)
            yield i

    items = prefetched(produce(), depth=3)
    assert next(items) == 0
    deadline = time.time() + 5
    while len(produced) < 4 and time.time() < deadline:  # 1 taken + 3 waiting
        time.sleep(0.01)
    assert produced == [0, 1, 2, 3]
    assert list(items) == [1, 2, 3, 4, 5]


def test_prefetched_raises_the_producers_error_after_its_items():
    def produce():
        yield 1
        raise ValueError("bad file")

    items = prefetched(produce(), depth=2)
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad file"):
        next(items)


def test_a_consumer_that_stops_stops_the_producer():
    produced = []

    def produce():
        for i in range(1000):
            produced.append(i)
            yield i

    items = prefetched(produce(), depth=2)
    assert next(items) == 0
    items.close()  # what a for loop left by an exception does
    time.sleep(0.5)
    assert len(produced) <= 5


def test_the_writer_runs_tasks_in_order_and_raises_the_first_failure():
    done = []
    with BackgroundWriter(depth=2) as writer:
        for i in range(20):
            writer.submit(lambda i=i: done.append(i))
    assert done == list(range(20))

    writer = BackgroundWriter()
    writer.submit(lambda: done.append("a"))
    writer.submit(lambda: 1 / 0)
    writer.submit(lambda: done.append("never"))
    with pytest.raises(ZeroDivisionError):
        writer.close()
    assert done[-1] == "a"


def test_the_blocks_own_error_wins_and_queued_writes_still_finish():
    done = []
    with pytest.raises(KeyError):
        with BackgroundWriter() as writer:
            writer.submit(lambda: (time.sleep(0.05), done.append(1)))
            raise KeyError("interrupted")
    assert done == [1]
