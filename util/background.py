"""Work beside the main thread: reading ahead of a consumer, and writing behind it.

A scorer spends its time in three places: decoding files, the model, and writing
maps. The model (TensorFlow) and the decoders and encoders (Pillow, zlib) release
the GIL while they work, so a reader thread that decodes the next images and a
writer thread that encodes the last ones overlap with the model's call instead of
waiting for it. Both keep order; an error in a thread is raised in the caller.
"""

import queue
import threading

_DONE = object()


class _Failure:
    def __init__(self, error):
        self.error = error


def prefetched(iterable, depth):
    """The items of ``iterable``, produced in a background thread at most ``depth`` items
    ahead of the consumer. An exception of the producer is raised at the consumer's next
    item; a consumer that stops early (an error, Ctrl-C) stops the producer."""
    items = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as err:  # noqa: BLE001  (handed to the consumer)
            items.put(_Failure(err))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


class BackgroundWriter:
    """Runs submitted callables one after another in a thread, in order, at most
    ``depth`` waiting; ``close`` waits for them and raises the first error (a failed task
    stops the ones after it). A context manager: leaving the block closes it."""

    def __init__(self, depth=8):
        self.tasks = queue.Queue(maxsize=max(1, int(depth)))
        self.error = None
        self.thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            task = self.tasks.get()
            if task is _DONE:
                return
            if self.error is None:
                try:
                    task()
                except BaseException as err:  # noqa: BLE001  (raised by close)
                    self.error = err

    def submit(self, task):
        """Queues ``task`` (a callable without arguments); raises an earlier task's error."""
        if self.error is not None:
            raise self.error
        self.tasks.put(task)

    def close(self):
        self.tasks.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the block's own error is the one to report; the queued writes still finish
            self.tasks.put(_DONE)
            self.thread.join()
        return False
