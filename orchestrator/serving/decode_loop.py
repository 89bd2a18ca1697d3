"""A server's continuous decoder, stepped on one worker thread while any request is decoding.

Requests arrive on the event loop; each gets its own queue of (Piece, adapter version). Between
two steps (never during one) the loop hands the decoder the requests that arrived and the ones
whose client went away, so a newcomer joins the running batch at the next step and a dropped
stream frees its row there. When a step raises, each row it held steps once by itself: a row
that raises alone fails with its error, and the others go on, in a fresh decoder, from the
tokens they had drawn, so one poisoned request fails no other (a row caught in a second failed
step fails without a trial, so a fault that needs company cannot loop). `drained()` holds new
requests back until every admitted one has finished: an adapter reload runs inside it, so a
request decodes on one adapter from its first token to its last.
"""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.sampling import Piece, SamplingParams


class DecodeFailed(Exception):
    """The decoding step that held this request raised."""

    status = 500


class WaitedTooLong(DecodeFailed):
    """No decoding slot came free for this request within the queue timeout."""

    status = 503


@dataclass(frozen=True)
class DecodeJob:
    """One answer to decode: its prompt tokens, λ and sampling parameters."""

    prompt_ids: list[int]
    preference: list[float]
    params: SamplingParams


class DecodeLoop:
    """`pieces(job)` yields a job's (Piece, adapter version) as they are decoded.

    `new_decoder()` builds the decoder (again after a failed step or a `rebuild`); `version()`
    names the adapter a request is admitted on.
    """

    def __init__(
        self,
        new_decoder: Callable[[], ContinuousDecoder],
        version: Callable[[], str],
        executor: Executor,
        queue_timeout_s: float = 60.0,
    ):
        self.new_decoder, self.version, self.executor = new_decoder, version, executor
        self.queue_timeout_s = queue_timeout_s
        self.arrived_at: dict[int, float] = {}
        self.decoder = new_decoder()
        self.keys = itertools.count()
        self.arrived: list[tuple[int, DecodeJob]] = []
        self.gone: set[int] = set()
        self.queues: dict[int, asyncio.Queue] = {}
        self.versions: dict[int, str] = {}  # the admitted requests' adapter versions
        self.jobs: dict[int, DecodeJob] = {}
        self.answers: dict[int, list[int]] = {}  # the tokens each admitted request drew so far
        self.tried: set[int] = set()  # requests that stepped alone after a failed step
        self.task: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.held = 0  # drained() callers holding new requests back
        self.steps = self.rows = self.admitted = self.largest = 0

    async def pieces(self, job: DecodeJob) -> AsyncIterator[tuple[Piece, str]]:
        key = next(self.keys)
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[key] = queue
        self.arrived.append((key, job))
        self.arrived_at[key] = time.monotonic()
        self._wake()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, DecodeFailed):
                    raise item
                if isinstance(item, BaseException):
                    raise DecodeFailed(str(item)) from item
                finished = item[0].finish is not None
                yield item
        finally:
            self._forget(key)
            if not finished:
                self.gone.add(key)
                self._wake()

    @asynccontextmanager
    async def drained(self):
        """Inside: no request is decoding, and new ones wait."""
        self.held += 1
        try:
            await self.idle.wait()
            yield
        finally:
            self.held -= 1
            self._wake()

    @property
    def waiting(self) -> int:
        """Requests here that no decoding slot holds yet."""
        return len(self.arrived) + len(self.decoder.waiting)

    def rebuild(self) -> None:
        """A new decoder (new slot count or scheduling); only inside drained()."""
        self.decoder = self.new_decoder()

    def _forget(self, key: int) -> None:
        for table in (self.queues, self.versions, self.arrived_at, self.jobs, self.answers):
            table.pop(key, None)
        self.tried.discard(key)

    def _wake(self) -> None:
        if self.task is None and (self.arrived or self.decoder.has_work()) and not self.held:
            self.idle.clear()
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._hand_over()
                if not self.decoder.has_work():
                    return
                try:
                    pieces = await loop.run_in_executor(self.executor, self.decoder.step)
                except Exception as err:
                    await self._isolate(err)
                    continue
                self.steps += 1
                self.rows += len(pieces)
                self.largest = max(self.largest, len(pieces))
                self._deliver(pieces)
        finally:
            self.task = None
            self.idle.set()
            if self.arrived and not self.held:
                self._wake()

    def _hand_over(self) -> None:
        self._expire()
        for key in self.gone:
            self.decoder.cancel(key)
        self.gone.clear()
        if self.held:
            return
        for key, job in self.arrived:
            if key not in self.queues:
                continue  # its client left before it was admitted
            try:
                self.decoder.add(key, job.prompt_ids, job.preference, job.params)
            except Exception as err:  # refused: this request alone fails
                self.queues[key].put_nowait(err)
                continue
            self.versions[key] = self.version()
            self.jobs[key], self.answers[key] = job, []
            self.admitted += 1
        self.arrived.clear()

    def _expire(self) -> None:
        """Requests still waiting for a slot past the queue timeout fail with WaitedTooLong."""
        deadline = time.monotonic() - self.queue_timeout_s
        for key in [request.key for request in self.decoder.waiting]:
            if self.arrived_at.get(key, deadline) < deadline and key in self.queues:
                message = f"no decoding slot came free within {self.queue_timeout_s:g} s"
                self._fail_one(key, WaitedTooLong(message))
                self.decoder.cancel(key)

    def _deliver(self, pieces: list[tuple[int, Piece]]) -> None:
        for key, piece in pieces:
            if key in self.queues:
                if piece.token is not None:
                    self.answers[key].append(piece.token)
                self.queues[key].put_nowait((piece, self.versions[key]))

    def _fail_one(self, key: int, err: Exception) -> None:
        self.queues.pop(key).put_nowait(err)
        self._forget(key)

    async def _isolate(self, err: Exception) -> None:
        """After a step raised `err`: each row it held steps alone, and fails only if that
        raises too; the others go on first in a fresh decoder, then the requests that were
        waiting for a slot."""
        waiting = self.decoder.take_waiting()
        queued = {request[0] for request in waiting}
        suspects = [key for key in self.versions if key not in queued]
        self.decoder = self.new_decoder()
        loop = asyncio.get_running_loop()
        for key in suspects:
            if key not in self.queues:  # its client left
                continue
            if key in self.tried:
                self._fail_one(key, err)
                continue
            self.tried.add(key)
            job = self.jobs[key]
            request = (key, job.prompt_ids, job.preference, job.params)
            try:
                pieces = await loop.run_in_executor(
                    self.executor, _step_alone, self.decoder, (*request, list(self.answers[key]))
                )
            except Exception as own:
                self._fail_one(key, own)
                continue
            self._deliver(pieces)
            if key in self.queues and pieces[-1][1].finish is None:
                self.decoder.add(*request, list(self.answers[key]))
        for request in waiting:
            self.decoder.add(*request)


def _step_alone(decoder: ContinuousDecoder, request: tuple) -> list[tuple[int, Piece]]:
    """One step of `request` (add's arguments) in a decoder of its own, like `decoder`."""
    solo = decoder.alone()
    solo.add(*request)
    return solo.step()
