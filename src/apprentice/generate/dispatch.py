"""Keep up to `concurrency` requests in flight over `Model.stream`, while new requests keep being planned.

`Model.stream` takes a fixed batch, but the generation loop learns what to ask next only as answers come back. The
dispatcher runs a few feeder threads; an idle feeder takes as many waiting requests as there are free slots and
streams them, so a slot freed by one answer is refilled at once by another feeder instead of waiting for the
slowest request of a batch. Each feeder builds its own model wrapper (`make_model`), because the response cache's
SQLite connection belongs to the thread that opened it.

For HTTP teachers use as many feeders as slots: a feeder waits for its whole stream, and the HTTP backend's stream
calls are cheap (they only queue requests for its slot workers). For local teachers use one feeder, so batches stay
whole. For the Batch API use one feeder in *waves*: it takes the waiting requests only once every answer has been
taken and the taker waits for more, so each wave of planned requests (everything the answers so far let the plan
create) goes as one batch, not as many small ones sent while the answers are still being read.

    dispatcher = Dispatcher(lambda: RecordedModel(model, db), concurrency=8, feeders=8)
    dispatcher.submit([(job_id, request), ...])
    job_id, completion = dispatcher.get()     # re-raises a feeder's error
    dispatcher.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from apprentice.models.base import Completion, Model, Request


class Dispatcher:
    def __init__(self, make_model: Callable[[], Model], concurrency: int, feeders: int, waves: bool = False):
        if concurrency < 1 or feeders < 1:
            raise ValueError("concurrency and feeders must be at least 1")
        if waves and feeders != 1:
            raise ValueError("waves need exactly one feeder")
        self.concurrency = concurrency
        self.waves = waves
        self._taker_waiting = False  # waves: `get` waits on an empty queue, so every answer so far was taken
        self._make_model = make_model
        self._waiting: deque[tuple[int, Request]] = deque()
        self._in_flight = 0
        self._closed = False
        self._cond = threading.Condition()
        self._results: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._feed, name=f"apprentice-feeder-{i}", daemon=True)
                         for i in range(feeders)]
        for thread in self._threads:
            thread.start()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def submit(self, jobs: Iterable[tuple[int, Request]]) -> None:
        # Wake one feeder per new job, not all of them: with dozens of feeders, waking every one on every answer
        # costs more CPU than the answers. A woken feeder takes all it can, and each freed slot wakes one more,
        # so no job waits beside a free slot.
        jobs = list(jobs)
        with self._cond:
            self._waiting.extend(jobs)
            self._cond.notify(len(jobs))

    def get(self, timeout: float | None = None) -> tuple[int, Completion] | None:
        """The next answer as (job id, completion); None after `timeout` seconds without one."""
        if self.waves:
            with self._cond:
                # the caller takes answers and submits what they plan on this one thread: with the queue empty,
                # everything planned so far is submitted, so the wave is whole
                self._taker_waiting = self._results.empty()
                self._cond.notify_all()
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            if self.waves:
                with self._cond:
                    self._taker_waiting = False
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, wait_s: float = 30.0) -> None:
        """Take no more requests and wait up to `wait_s` for the feeders to stop: each stops at the next answer it
        receives and cancels the rest of its stream. (Threads left running at interpreter exit can crash it.)"""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[tuple[int, Request]] | None:
        with self._cond:
            while not self._closed and not (self._waiting and self._in_flight < self.concurrency and (
                    not self.waves or (self._in_flight == 0 and self._taker_waiting and self._results.empty()))):
                self._cond.wait()
            if self._closed:
                return None
            count = min(len(self._waiting), self.concurrency - self._in_flight)
            self._in_flight += count
            return [self._waiting.popleft() for _ in range(count)]

    def _feed(self) -> None:
        try:
            model = self._make_model()
            while (batch := self._take()) is not None:
                answers = model.stream([request for _, request in batch])
                try:
                    for position, completion in answers:
                        with self._cond:
                            self._in_flight -= 1
                            self._taker_waiting = False  # this answer is not taken yet: the wave is not whole
                            self._cond.notify()
                            closed = self._closed
                        if closed:
                            break
                        self._results.put((batch[position][0], completion))
                finally:
                    answers.close()  # a stream left early cancels its requests
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that reads the answers
            self._results.put(exc)
