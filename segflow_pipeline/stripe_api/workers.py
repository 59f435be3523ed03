"""Row-building helper processes: response bodies become rows (`objects.page_rows`) on another core. No Dagster.

A large full sync starts them (`crawler.Crawler`): its threads then only fetch, and its GIL is no longer the limit.
The helper's own loop is `row_helper.py`.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections import deque

from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.errors import UnexpectedBody


class ConversionProcess:
    """A child Python that turns response bodies into rows (`objects.page_rows`) on another core.

    Parsing and row building hold the GIL for milliseconds per page; at Stripe's 100 req/s that is more than the
    core the HTTP threads share. The child gets length-prefixed pickles of (kind, body, ...) on stdin and
    answers pickled Pages on stdout, in order; it exits when its stdin closes (also when the parent is killed).
    """

    def __init__(self) -> None:
        code = "from segflow_pipeline.stripe_api.row_helper import serve_conversions; serve_conversions()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def send(self, payload: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(struct.pack("<Q", len(payload)) + payload)
        stdin.flush()

    def receive(self) -> bytes:
        stdout = self.proc.stdout
        assert stdout is not None
        header = stdout.read(8)
        if len(header) < 8:
            raise OSError("the row-building process ended")
        size = struct.unpack("<Q", header)[0]
        answer = stdout.read(size)
        if len(answer) < size:
            raise OSError("the row-building process ended mid-answer")
        return answer

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Job:
    """One page handed to the helper pool; the fetching thread waits on it (without the GIL)."""

    __slots__ = ("payload", "done", "answer", "error")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.done = threading.Event()
        self.answer: bytes | None = None
        self.error: BaseException | None = None


class HelperPool:
    """Row-building helper processes fed from one job queue, each kept busy with up to PIPELINE jobs in flight.

    Per helper a sender thread writes jobs to its stdin and a receiver thread reads the answers in order, so a
    helper starts on the next page while the previous answer is still on its way back, and never waits for a
    thread of this process to get the GIL. A helper that fails hands its jobs back as errors; the callers then
    build those rows themselves.
    """

    PIPELINE = 2

    def __init__(self, size: int) -> None:
        self.jobs: queue.PriorityQueue = queue.PriorityQueue()  # (urgency, seq, job); None-jobs stop senders
        self._seq = itertools.count()
        self.helpers: list[ConversionProcess] = []
        self.alive = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        for _ in range(size):
            helper = ConversionProcess()
            self.helpers.append(helper)
            in_flight: deque[_Job] = deque()
            slots = threading.Semaphore(self.PIPELINE)
            self.alive += 1
            for target in (self._sender, self._receiver):
                thread = threading.Thread(target=target, args=(helper, in_flight, slots), daemon=True,
                                          name=f"stripe-rows-{target.__name__.strip('_')}")
                thread.start()
                self._threads.append(thread)

    def convert(self, kind: str, body: bytes, integration: str, context: dict, single: bool,
                urgent: bool = False) -> objects.Page | None:
        """The page's rows built by a helper; None when no helper is left (build them here then). Urgent pages
        (a run of pages waits for them) go ahead of the others."""
        if not self.alive:
            return None
        job = _Job(pickle.dumps((kind, body, integration, context, single), protocol=pickle.HIGHEST_PROTOCOL))
        self.jobs.put((0 if urgent else 1, next(self._seq), job))
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.answer is not None
        status, value = pickle.loads(job.answer)
        if status == "unexpected":
            raise UnexpectedBody(value)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def _sender(self, helper: ConversionProcess, in_flight: deque, slots: threading.Semaphore) -> None:
        while True:
            slots.acquire()
            job = self.jobs.get()[-1]
            if job is None:
                return
            with self._lock:
                in_flight.append(job)
            try:
                helper.send(job.payload)
            except (OSError, ValueError) as exc:
                self._fail(helper, in_flight, exc)
                return
            job.payload = b""

    def _receiver(self, helper: ConversionProcess, in_flight: deque, slots: threading.Semaphore) -> None:
        while True:
            try:
                answer = helper.receive()
            except (OSError, ValueError) as exc:
                self._fail(helper, in_flight, exc)
                return
            with self._lock:
                job = in_flight.popleft()
            job.answer = answer
            job.done.set()
            slots.release()

    def _fail(self, helper: ConversionProcess, in_flight: deque, exc: BaseException) -> None:
        with self._lock:
            if helper in self.helpers:
                self.helpers.remove(helper)
                self.alive -= 1
            failed = list(in_flight)
            in_flight.clear()
        for job in failed:
            job.error = OSError(f"a row-building helper process failed ({exc})")
            job.done.set()
        if not self.alive:
            # Nobody takes jobs any more: hand back what is still queued.
            while True:
                try:
                    job = self.jobs.get_nowait()[-1]
                except queue.Empty:
                    return
                if job is not None:
                    job.error = OSError(f"no row-building helper process left ({exc})")
                    job.done.set()

    def close(self) -> None:
        helpers = list(self.helpers)
        self.alive = 0
        for _ in self._threads:
            self.jobs.put((2, next(self._seq), None))
        for helper in helpers:
            helper.close()
        for thread in self._threads:
            thread.join(timeout=10)

