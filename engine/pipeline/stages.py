"""The threaded pipeline: prepare (worker pool) -> batch -> network (its own thread) -> decode.

    caller's thread           feeder thread                    network thread
    ---------------           -------------                    --------------
                              items -> worker pool (decode,
                              detect, crop; at most `ahead`
                              items in flight) -> in order ->
                              Batch (crops buffer + entries) --q_net--> runner (GPU: + decode
    decode (CPU) + results <--------------------------------q_out------  on the runner's stream,
                                                                         records copied back)

Every queue is bounded, so memory stays bounded on any number of inputs and a slow
consumer slows the whole pipeline down instead of piling up batches. Order is the input
order: futures are consumed in submission order and batches travel FIFO through one
thread per stage.

On the CPU, decoding runs in the caller's thread while the network thread runs the next
batch; the decode kernel and ONNX Runtime both release the GIL, so they truly overlap.

Stopping: `close()` (called when the caller's generator finishes, is closed, or is
interrupted by Ctrl-C) sets a stop event every blocking put/get polls, cancels queued
prep work and joins the threads; the network thread finishes at most its current batch.
"""
from __future__ import annotations

import collections
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as _FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from engine.errors import BackendError
from engine.network import architecture as arch

_POLL_S = 0.1
_END = object()  # the feeder's last batch went through
_STOPPED = object()  # close() was called


@dataclass
class Entry:
    """One output slot of a batch: a face (row >= 0 in the batch) or a failed input (row -1)."""

    source: str
    frame: int | None
    face_index: int
    box: Any
    row: int
    error: str | None = None


@dataclass
class DeviceRow:
    """A batch row the device input fills (engine.pipeline.device_input): face `face` of `plan`."""

    row: int
    plan: Any
    face: int


@dataclass
class Batch:
    crops: np.ndarray  # [capacity, 3, 224, 224]; the first n rows are filled
    n: int = 0
    entries: list = field(default_factory=list)
    coeffs: np.ndarray | None = None  # [n, 198] host float32
    decoded: Any = None  # DecodedBatch (CPU) or HostDecoded (GPU), when decoding
    pending: Any = None  # GPU: the copy back in flight (see engine.pipeline.gpu)
    finite: np.ndarray | None = None  # bool [n]: rows whose coefficients are all finite
    # Rows the device input fills (DeviceRow): their crops are not in `crops`; the network
    # thread decodes and crops them on the device (engine.pipeline.device_input), and copies
    # them back into `crops` when `keep_crops` (the caller wants every face's crop).
    device: list = field(default_factory=list)
    keep_crops: bool = False


class _Failure:
    """An exception raised in a pipeline thread, carried to the caller's thread."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def new_batch(capacity: int) -> Batch:
    return Batch(np.empty((capacity, 3, arch.INPUT_SIZE, arch.INPUT_SIZE), np.float32))


def batches_from_prepared(prepared: Iterable, batch_size: int, stop: threading.Event, *,
                          keep_crops: bool = False) -> Iterator[Batch]:
    """Group prepared items (in order) into batches of `batch_size` faces.

    Failed inputs ride in the batch where they occur so that they come out in their place.
    A batch is also closed after 4 x batch_size entries, so a long run of failures does not
    accumulate without bound. An input prepared for the device (a `plan`, no crops) gets its rows
    in `Batch.device` instead of crops; `keep_crops` is every batch's Batch.keep_crops."""
    def fresh() -> Batch:
        b = new_batch(batch_size)
        b.keep_crops = keep_crops
        return b

    batch = fresh()
    for p in prepared:
        if stop.is_set():
            return
        it = p.item
        if p.error is not None:
            batch.entries.append(Entry(it.source, it.frame, -1, None, -1, p.error))
        else:
            plan = getattr(p, "plan", None)
            for f, box in enumerate(p.boxes):
                if batch.n == batch_size:
                    yield batch
                    batch = fresh()
                if plan is None:
                    batch.crops[batch.n] = p.crops[f]
                else:
                    batch.device.append(DeviceRow(batch.n, plan, f))
                batch.entries.append(Entry(it.source, it.frame, f, box, batch.n))
                batch.n += 1
        if batch.n == batch_size or len(batch.entries) >= 4 * batch_size:
            yield batch
            batch = fresh()
    if batch.entries:
        yield batch


class Pipeline:
    """Runs `run_batch` (network, and on a GPU also decode) on a thread of its own over the
    batches produced by a feeder thread; iterate to get processed batches in order.

    batches: a function returning the batch iterator (runs on the feeder thread), given the
        prep pool (or None) and the stop event.
    run_batch: Batch -> Batch, on the network thread: the network (on a GPU also the decode
        and the queued copy back).
    finish_batch: Batch -> Batch, on the caller's thread: the CPU decode, or on a GPU the
        wait for the copy back; may be None.
    """

    def __init__(self, batches: Callable, run_batch: Callable, finish_batch: Callable | None = None, *,
                 workers: int = 0, depth: int = 2, name: str = "engine"):
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=f"{name}-prep") if workers > 0 else None
        self._q_net: queue.Queue = queue.Queue(maxsize=depth)
        self._q_out: queue.Queue = queue.Queue(maxsize=depth)
        self._finish = finish_batch
        self._run_batch = run_batch
        self._batches = batches
        self._threads = [threading.Thread(target=self._feed, name=f"{name}-feeder", daemon=True),
                         threading.Thread(target=self._network, name=f"{name}-network", daemon=True)]
        self._started = False
        self._closed = False

    # -- blocking queue operations that give up when the pipeline stops ------------------
    def _put(self, q: queue.Queue, x) -> bool:
        while not self.stop.is_set():
            try:
                q.put(x, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _STOPPED

    # -- threads -------------------------------------------------------------------------
    def _feed(self) -> None:
        try:
            for batch in self._batches(self.pool, self.stop):
                if not self._put(self._q_net, batch):
                    return
            self._put(self._q_net, _END)
        except BaseException as e:  # carried to the caller's thread, re-raised there
            self._put(self._q_net, _Failure(e))

    def _network(self) -> None:
        while True:
            x = self._get(self._q_net)
            if x is _STOPPED:
                return
            if x is _END or isinstance(x, _Failure):
                self._put(self._q_out, x)
                return
            try:
                x = self._run_batch(x)
            except BaseException as e:
                self._put(self._q_out, _Failure(e))
                return
            if not self._put(self._q_out, x):
                return

    # -- the caller's side ---------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        if self._started:
            raise BackendError("pipeline: already iterated (a Pipeline runs once)")
        self._started = True
        for t in self._threads:
            t.start()
        try:
            while True:
                x = self._get(self._q_out)
                if x is _END:
                    return
                if x is _STOPPED:  # closed from elsewhere (Reconstructor.close) while iterating
                    raise BackendError("pipeline: closed before all results were produced")
                if isinstance(x, _Failure):
                    raise x.exc
                yield self._finish(x) if self._finish is not None else x
        finally:
            self.close()

    def close(self) -> None:
        """Stop every thread and drop queued work; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for t in self._threads:
            if t.is_alive():
                t.join()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def ordered_map(pool: ThreadPoolExecutor | None, fn: Callable, items: Iterable, ahead: int,
                stop: threading.Event) -> Iterator:
    """fn(item) for each item, computed on `pool` with at most `ahead` in flight, yielded
    in input order (deterministic whatever the number of workers)."""
    if pool is None:
        for it in items:
            if stop.is_set():
                return
            yield fn(it)
        return
    pending: collections.deque = collections.deque()
    for it in items:
        if stop.is_set():
            return
        pending.append(pool.submit(fn, it))
        if len(pending) >= ahead:
            yield _result(pending.popleft(), stop)
    while pending:
        if stop.is_set():
            return
        yield _result(pending.popleft(), stop)


def _result(fut, stop: threading.Event):
    while True:
        try:
            return fut.result(timeout=_POLL_S)
        except _FutureTimeout:
            if stop.is_set():
                fut.cancel()
                raise _Stopped() from None


class _Stopped(Exception):
    """Internal: the pipeline stopped while the feeder waited for prep work."""
