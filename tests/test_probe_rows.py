"""The row queues that batch products across pairs (sweep/probes/rows.py), with a toy product
(squaring rows) whose answers are known: batches stay full, answers go back row for row, errors
fail only the programs concerned, and the schedule is deterministic."""

from __future__ import annotations

import pytest
import torch

from sweep.probes.rows import Ask, run_rows


def _ops(log: list[tuple[str, int]], fail_at: int | None = None):
    def square(points, rows):
        log.append(("sq", len(rows)))
        if fail_at is not None and len(log) == fail_at:
            raise RuntimeError("out of memory (test)")
        return rows**2

    def shifted(points, rows):
        log.append(("add", len(rows)))
        return rows + points.flatten(1)[:, :1]

    return {"sq": square, "add": shifted}


def _program(values: list[list[float]], point: float = 0.0):
    """Asks for the squares of each list in turn (and once, rows + point); returns every answer."""
    got = []
    for chunk in values:
        (answer,) = yield [Ask("sq", None, torch.tensor(chunk)[:, None])]
        got.append(answer[:, 0].tolist())
    (a, b) = yield [Ask("sq", None, torch.tensor([3.0])[:, None]), Ask("add", torch.tensor([point]), torch.tensor([[1.0], [2.0]]))]
    got.append(a[:, 0].tolist() + b[:, 0].tolist())
    return got


def _expected(values: list[list[float]], point: float = 0.0) -> list[list[float]]:
    return [[v * v for v in chunk] for chunk in values] + [[9.0, 1.0 + point, 2.0 + point]]


def test_answers_come_back_row_for_row_and_batches_stay_full():
    g = torch.Generator().manual_seed(0)
    specs = {f"p{i}": [[float(v) for v in torch.randint(-9, 9, (int(n),), generator=g)] for n in torch.randint(1, 7, (3,), generator=g)]
             for i in range(12)}
    log: list[tuple[str, int]] = []
    out = dict(run_rows(_ops(log), ((k, _program(v, float(i))) for i, (k, v) in enumerate(specs.items())), batch_size=5))
    assert out == {k: _expected(v, float(i)) for i, (k, v) in enumerate(specs.items())}
    sizes = [n for kind, n in log if kind == "sq"]
    total = sum(len(c) for v in specs.values() for c in v) + len(specs)
    assert sum(sizes) == total and max(sizes) <= 5
    # rows of many programs fill the batches: all but the last few are full
    assert sum(n == 5 for n in sizes) >= total // 5 - 2, sizes


def test_with_one_kind_every_batch_but_the_last_is_full():
    started: list[int] = []  # batches run when each program started

    def program(n: int, rounds: int):
        started.append(len(log))
        got = 0.0
        for r in range(rounds):
            (answer,) = yield [Ask("sq", None, torch.full((n, 1), float(r)))]
            got += float(answer.sum())
        return got

    log: list[tuple[str, int]] = []
    sizes = [(3, 4), (8, 2), (1, 5), (2, 1), (7, 3)] * 3
    out = list(run_rows(_ops(log), ((i, program(n, r)) for i, (n, r) in enumerate(sizes)), batch_size=6))
    assert sorted(out) == sorted((i, float(n * sum(k * k for k in range(r)))) for i, (n, r) in enumerate(sizes))
    batches = [n for _, n in log]
    assert sum(batches) == sum(n * r for n, r in sizes)
    # until the last program joined, every batch was full (afterwards the stragglers' last rounds)
    assert started[-1] > len(sizes) // 2 and all(n == 6 for n in batches[:started[-1]]), (started, batches)


def test_one_program_alone_runs_its_asks_in_order():
    log: list[tuple[str, int]] = []
    ((key, got),) = list(run_rows(_ops(log), [("a", _program([[1.0, 2.0, 3.0], [4.0]], 5.0))], batch_size=2))
    assert key == "a" and got == _expected([[1.0, 2.0, 3.0], [4.0]], 5.0)
    assert log[:3] == [("sq", 2), ("sq", 1), ("sq", 1)]  # an ask of 3 rows split over two batches


def test_a_failed_batch_fails_only_its_programs():
    log: list[tuple[str, int]] = []
    programs = [(f"p{i}", _program([[float(i)] * 2], float(i))) for i in range(4)]
    out = dict(run_rows(_ops(log, fail_at=1), programs, batch_size=4))
    failed = {k for k, v in out.items() if isinstance(v, RuntimeError)}
    assert failed == {"p0", "p1"}  # the first batch held these two programs' rows
    assert out["p2"] == _expected([[2.0, 2.0]], 2.0) and out["p3"] == _expected([[3.0, 3.0]], 3.0)


def test_an_error_in_a_program_fails_only_that_program():
    def bad():
        yield [Ask("sq", None, torch.ones(2, 1))]
        raise ValueError("bad pair (test)")

    out = dict(run_rows(_ops([]), [("ok", _program([[2.0]])), ("bad", bad()), ("ok2", _program([[3.0]]))], batch_size=3))
    assert isinstance(out["bad"], ValueError) and out["ok"] == _expected([[2.0]]) and out["ok2"] == _expected([[3.0]])


def test_the_schedule_is_deterministic_and_programs_are_capped():
    def run() -> list[tuple[str, int]]:
        log: list[tuple[str, int]] = []
        list(run_rows(_ops(log), ((f"p{i}", _program([[1.0] * (i % 4 + 1)] * 3)) for i in range(9)), batch_size=6, max_programs=2))
        return log

    first = run()
    assert first == run()
    assert max(n for _, n in first) <= 6


def test_an_ask_of_no_rows_is_refused():
    def empty():
        yield [Ask("sq", None, torch.ones(0, 1))]

    with pytest.raises(ValueError, match="ask for rows"):
        list(run_rows(_ops([]), [("e", empty())], batch_size=2))
