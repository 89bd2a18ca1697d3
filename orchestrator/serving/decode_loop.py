"""A server's continuous decoder, stepped on one worker thread while any request is decoding.

Requests arrive on the event loop; each gets its own queue of (Piece, adapter version). Between
two steps (never during one) the loop hands the decoder the requests that arrived and the ones
whose client went away, so a newcomer joins the running batch at the next step and a dropped
stream frees its row there. A step that raises fails the requests it was decoding — each gets
the error, every other request goes on — and the decoder starts afresh. `drained()` holds new
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
        self.versions: dict[int, str] = {}
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
            self.queues.pop(key, None)
            self.versions.pop(key, None)
            self.arrived_at.pop(key, None)
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
                except Exception as err:  # the requests it was decoding get it, no one else
                    self._fail(err)
                    continue
                self.steps += 1
                self.rows += len(pieces)
                self.largest = max(self.largest, len(pieces))
                for key, piece in pieces:
                    if key in self.queues:
                        self.queues[key].put_nowait((piece, self.versions[key]))
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
            self.admitted += 1
        self.arrived.clear()

    def _expire(self) -> None:
        """Requests still waiting for a slot past the queue timeout fail with WaitedTooLong."""
        deadline = time.monotonic() - self.queue_timeout_s
        for key in [request.key for request in self.decoder.waiting]:
            if self.arrived_at.get(key, deadline) < deadline and key in self.queues:
                message = f"no decoding slot came free within {self.queue_timeout_s:g} s"
                self.queues.pop(key).put_nowait(WaitedTooLong(message))
                self.decoder.cancel(key)
                self.versions.pop(key, None)

    def _fail(self, err: Exception) -> None:
        """The rows the failed step held get `err`; the requests still waiting for a slot go
        to a fresh decoder."""
        waiting = self.decoder.take_waiting()
        queued = {request[0] for request in waiting}
        for key in [k for k in self.versions if k not in queued]:
            if key in self.queues:
                self.queues[key].put_nowait(err)
            del self.versions[key]
        self.decoder = self.new_decoder()
        for request in waiting:
            self.decoder.add(*request)
