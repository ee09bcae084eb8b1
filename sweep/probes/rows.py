"""Continuous batching of row-wise products across pairs (used by the `lipschitz` probe).

A probe that needs many small batched products per pair (forward passes, forward-mode JVPs,
reverse-mode VJPs, each over a handful of rows) writes one *program* per pair: a generator that
yields a list of `Ask`s (the products it needs next) and receives their answers, row for row, in
the same order; its return value is the pair's result. `run_rows` runs many programs at once and
answers their asks in batches of up to `batch_size` rows of one kind, mixing rows of different
pairs, so a batch stays full even when one pair's ask is small (8 vectors of a subspace
iteration, 1 gradient) or leaves a remainder (768 Jacobian rows in batches of 500).

Scheduling (deterministic: it depends only on the order of the programs and the rows they ask):

- a batch is of the kind of the oldest program's first unanswered ask, and it takes rows of that
  kind from the oldest programs first (splitting an ask across batches where needed), so the
  oldest pairs finish first and few pairs hold large intermediate results at once;
- a new program is admitted while fewer than `batch_size` rows of that kind wait and fewer
  than `max_programs` (default `batch_size`) programs run: the next batch would not be full;
- when a batched product raises RuntimeError or ValueError (say, out of memory), every program
  with rows in that batch fails (its key comes back with the exception), the others go on; an
  exception raised by a program's own code fails only that program.

Rows never influence each other (a ViT in eval mode is row-independent), so a program's answers
do not depend on its batch neighbours beyond the rounding of batched kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class Rows(Protocol):
    """Rows to be answered: a tensor (n, ...) or anything sized that slices into one."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> torch.Tensor: ...


@dataclass
class Ask:
    kind: str  # which batched operation answers it
    point: torch.Tensor | None  # the point every row is taken at (e.g. x0, (3, H, W)); None: rows are inputs
    rows: Rows  # (n, ...) one answer row per row


# op(points, rows) -> answers: points (n, *point.shape) or None, rows (n, ...), answers (n, ...)
Op = Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]
Program = Generator[list[Ask], list[torch.Tensor], Any]


@dataclass
class _Job:
    key: Any
    program: Program
    order: int  # admission order: smaller is older
    asks: list[Ask] = field(default_factory=list)
    parts: list[list[torch.Tensor]] = field(default_factory=list)  # answered slices per ask
    missing: int = 0  # rows not answered yet


@dataclass
class _Waiting:
    job: _Job
    index: int  # which of the job's asks
    next_row: int = 0  # first row not yet put in a batch

    def left(self) -> int:
        return len(self.job.asks[self.index].rows) - self.next_row


def run_rows(
    ops: dict[str, Op],
    programs: Iterable[tuple[Any, Program]],
    batch_size: int,
    max_programs: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Run (key, program) pairs; yield (key, return value) as programs finish, or (key, exception)
    for a program that failed (RuntimeError or ValueError)."""
    batch_size = max(1, batch_size)
    cap = max(1, max_programs if max_programs is not None else batch_size)
    source = iter(programs)
    queues: dict[str, list[_Waiting]] = {kind: [] for kind in ops}
    running = 0
    admitted = 0
    exhausted = False

    def advance(job: _Job, answers: list[torch.Tensor] | None) -> Iterator[tuple[Any, Any]]:
        nonlocal running
        try:
            asks = next(job.program) if answers is None else job.program.send(answers)
        except StopIteration as stop:
            running -= 1
            yield job.key, stop.value
            return
        except (RuntimeError, ValueError) as err:
            running -= 1
            yield job.key, err
            return
        if not asks or any(len(a.rows) == 0 or a.kind not in queues for a in asks):
            raise ValueError(f"a program must ask for rows of known kinds ({', '.join(queues)}), got {asks!r}")
        job.asks, job.parts = asks, [[] for _ in asks]
        job.missing = sum(len(a.rows) for a in asks)
        for index, ask in enumerate(asks):
            queues[ask.kind].append(_Waiting(job, index))
            queues[ask.kind].sort(key=lambda w: (w.job.order, w.index))

    def next_kind() -> str | None:
        """The kind of the oldest program's first unanswered ask (None: nothing waits)."""
        heads = [(queue[0].job.order, queue[0].index, kind) for kind, queue in queues.items() if queue]
        return min(heads)[2] if heads else None

    def short() -> bool:
        kind = next_kind()
        return kind is None or sum(w.left() for w in queues[kind]) < batch_size

    while True:
        while not exhausted and running < cap and short():
            try:
                key, program = next(source)
            except StopIteration:
                exhausted = True
                break
            running += 1
            admitted += 1
            yield from advance(_Job(key, program, admitted), None)
        kind = next_kind()
        if kind is None:
            if exhausted:
                return
            continue
        queue = queues[kind]
        taken: list[tuple[_Waiting, int, int]] = []  # (waiting ask, first row, end row)
        room = batch_size
        for waiting in queue:
            if room == 0:
                break
            n = min(room, waiting.left())
            taken.append((waiting, waiting.next_row, waiting.next_row + n))
            room -= n
        for waiting, _, end in taken:
            waiting.next_row = end
        queue[:] = [w for w in queue if w.left() > 0]
        rows = torch.cat([w.job.asks[w.index].rows[a:b] for w, a, b in taken])
        points = None
        if taken[0][0].job.asks[taken[0][0].index].point is not None:
            points = torch.cat([_expand(w.job.asks[w.index].point, b - a) for w, a, b in taken])
        try:
            answers = ops[kind](points, rows)
        except (RuntimeError, ValueError) as err:
            failed = {id(w.job): w.job for w, _, _ in taken}
            for other in queues.values():
                other[:] = [w for w in other if id(w.job) not in failed]
            for job in failed.values():
                job.program.close()
                running -= 1
                yield job.key, err
            continue
        offset = 0
        for waiting, a, b in taken:
            job = waiting.job
            job.parts[waiting.index].append(answers[offset:offset + b - a])
            offset += b - a
            job.missing -= b - a
            if job.missing == 0:
                yield from advance(job, [torch.cat(parts) for parts in job.parts])


def _expand(point: torch.Tensor | None, n: int) -> torch.Tensor:
    assert point is not None, "asks of one kind either all have a point or none has"
    return point.expand(n, *point.shape)
