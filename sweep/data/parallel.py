"""A process pool for image work (verify, re-encode, decode) that streams in input order and
never reads its whole input ahead."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def process_context() -> multiprocessing.context.BaseContext:
    """forkserver: workers fork from a clean single-threaded server, never from a process that
    runs threads (a Ray actor, a DataLoader), where a plain fork can deadlock. The server
    imports the decoding modules once, so each worker starts in milliseconds, not seconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sweep.data.shards", "sweep.data.build"])
    return context


def _apply_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(item) for item in chunk]


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, chunk: int = 32
) -> Iterator[R]:
    """`map(fn, items)` in worker processes, results in input order, at most a few chunks in
    flight (unlike Pool.imap, which reads the whole input ahead). workers=0 runs inline."""
    workers = default_workers() if workers is None else workers
    if workers <= 0 or multiprocessing.current_process().daemon:
        yield from map(fn, items)
        return
    pending: deque[Future[list[R]]] = deque()
    with ProcessPoolExecutor(workers, mp_context=process_context()) as pool:
        batch: list[T] = []
        for item in items:
            batch.append(item)
            if len(batch) == chunk:
                pending.append(pool.submit(_apply_chunk, fn, batch))
                batch = []
                if len(pending) >= 2 * workers:
                    yield from pending.popleft().result()
        if batch:
            pending.append(pool.submit(_apply_chunk, fn, batch))
        while pending:
            yield from pending.popleft().result()
