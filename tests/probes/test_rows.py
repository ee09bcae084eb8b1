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


# --- the schedule itself, event by event, on hand-traced cases -------------------------------------
# Row values name their row: program k, round r, row i is the value 100 k + 10 r + i. The ops and the
# programs write one shared event list: ("start", key) when a program is admitted (its first step),
# ("sq", rows) / ("add", rows, points) for each batched product, ("end", key) when a program's
# generator finishes (returned, raised or was closed), ("out", key) when run_rows hands back its
# result. The expected lists below were worked out by hand from the rules in rows.py's docstring.


def _traced_ops(events: list[tuple], poison: bool = False):
    def square(points, rows):
        events.append(("sq", rows[:, 0].tolist()) if points is None else ("sq", rows[:, 0].tolist(), "points"))
        if poison and bool((rows < 0).any()):
            raise RuntimeError("out of memory (test)")
        return rows**2

    def shifted(points, rows):
        events.append(("add", rows[:, 0].tolist(), points.flatten(1)[:, 0].tolist()))
        return rows + points.flatten(1)[:, :1]

    return {"sq": square, "add": shifted}


def _traced(events: list[tuple], key: str, rounds: list[list[tuple[str, float | None, list[float]]]],
            fail_after: int | None = None):
    """A program asking, round after round, for the asks (kind, point or None, row values) of
    `rounds`; returns the answers as lists of floats; raises ValueError after round `fail_after`'s
    answers (-1: before asking anything)."""
    events.append(("start", key))
    try:
        got = []
        if fail_after == -1:
            raise ValueError(f"bad pair {key} (test)")
        for r, asks in enumerate(rounds):
            answers = yield [Ask(kind, None if point is None else torch.tensor([float(point)]),
                                 torch.tensor(values, dtype=torch.float64)[:, None]) for kind, point, values in asks]
            got.append([a[:, 0].tolist() for a in answers])
            if fail_after == r:
                raise ValueError(f"bad pair {key} (test)")
        return got
    finally:
        events.append(("end", key))


def _rows(k: int, r: int, n: int) -> list[float]:
    return [float(100 * k + 10 * r + i) for i in range(n)]


def _run(events: list[tuple], programs, **kwargs) -> dict:
    out = {}
    for key, value in run_rows(programs=programs, **kwargs):
        assert key not in out, f"{key} came back twice"
        events.append(("out", key))
        out[key] = value
    return out


def test_oldest_first_and_admission_only_while_the_next_batch_would_not_be_full():
    events: list[tuple] = []
    names = "ABCD"
    programs = [(names[k - 1], _traced(events, names[k - 1], [[("sq", None, _rows(k, 0, 3))], [("sq", None, _rows(k, 1, 3))]]))
                for k in range(1, 5)]
    out = _run(events, programs, ops=_traced_ops(events), batch_size=4)
    assert events == [
        ("start", "A"), ("start", "B"),  # 3 rows wait after A: not a full batch; 6 after B
        ("sq", [100.0, 101.0, 102.0, 200.0]),  # A's ask whole, then the start of B's
        ("sq", [110.0, 111.0, 112.0, 201.0]),  # A's next ask goes before B's rest: A is older
        ("end", "A"), ("out", "A"),
        ("start", "C"),  # 1 row waits (B's last): C joins; then 4 wait, enough
        ("sq", [202.0, 300.0, 301.0, 302.0]),
        ("sq", [210.0, 211.0, 212.0, 310.0]),
        ("end", "B"), ("out", "B"),
        ("start", "D"),
        ("sq", [311.0, 312.0, 400.0, 401.0]),
        ("end", "C"), ("out", "C"),
        ("sq", [402.0]),
        ("sq", [410.0, 411.0, 412.0]),
        ("end", "D"), ("out", "D"),
    ]
    assert out == {names[k - 1]: [[[v * v for v in _rows(k, 0, 3)]], [[v * v for v in _rows(k, 1, 3)]]] for k in range(1, 5)}


def test_max_programs_caps_the_programs_running_at_once_whatever_way_they_end():
    events: list[tuple] = []
    one = [[("sq", None, _rows(1, 0, 1))]]
    programs = [
        ("Q", _traced(events, "Q", one, fail_after=-1)),  # fails in its own code before asking
        ("P0", _traced(events, "P0", [])),  # returns before asking
        ("P1", _traced(events, "P1", [[("sq", None, _rows(1, 0, 1))], [("sq", None, _rows(1, 1, 1))]])),
        ("P2", _traced(events, "P2", [[("sq", None, _rows(2, 0, 1))]])),
        ("P3", _traced(events, "P3", [[("sq", None, _rows(3, 0, 1))]])),
        ("P4", _traced(events, "P4", [[("sq", None, _rows(4, 0, 1))]])),
    ]
    out = _run(events, programs, ops=_traced_ops(events), batch_size=10, max_programs=2)
    assert events == [
        ("start", "Q"), ("end", "Q"), ("out", "Q"),
        ("start", "P0"), ("end", "P0"), ("out", "P0"),
        ("start", "P1"), ("start", "P2"),  # two running: the cap, although 10 rows would fit
        ("sq", [100.0, 200.0]),
        ("end", "P2"), ("out", "P2"),
        ("start", "P3"),
        ("sq", [110.0, 300.0]),
        ("end", "P1"), ("out", "P1"), ("end", "P3"), ("out", "P3"),
        ("start", "P4"),
        ("sq", [400.0]),
        ("end", "P4"), ("out", "P4"),
    ]
    assert isinstance(out["Q"], ValueError) and "bad pair Q" in str(out["Q"])
    assert out["P0"] == [] and out["P1"] == [[[10000.0]], [[12100.0]]] and out["P4"] == [[[160000.0]]]


def test_one_program_at_a_time_with_max_programs_one_or_zero():
    for cap in (1, 0):  # 0 is taken as 1
        events: list[tuple] = []
        programs = [(k, _traced(events, k, [[("sq", None, _rows(k, 0, 1))], [("sq", None, _rows(k, 1, 1))]])) for k in (1, 2, 3)]
        out = _run(events, programs, ops=_traced_ops(events), batch_size=10, max_programs=cap)
        assert events == [e for k in (1, 2, 3) for e in (
            ("start", k), ("sq", [100.0 * k]), ("sq", [100.0 * k + 10]), ("end", k), ("out", k))], cap
        assert out == {k: [[[(100.0 * k) ** 2]], [[(100.0 * k + 10) ** 2]]] for k in (1, 2, 3)}


def test_a_batch_size_of_one_or_zero_answers_one_row_at_a_time():
    for size in (1, 0):  # 0 is taken as 1
        events: list[tuple] = []
        programs = [(k, _traced(events, k, [[("sq", None, _rows(k, 0, 2))]])) for k in (1, 2)]
        out = _run(events, programs, ops=_traced_ops(events), batch_size=size)
        # one row waiting is a full batch: the second program starts only when the first has finished
        assert events == [("start", 1), ("sq", [100.0]), ("sq", [101.0]), ("end", 1), ("out", 1),
                          ("start", 2), ("sq", [200.0]), ("sq", [201.0]), ("end", 2), ("out", 2)], size
        assert out == {1: [[[10000.0, 10201.0]]], 2: [[[40000.0, 40401.0]]]}


def test_a_failed_batch_drops_its_programs_other_asks_and_frees_their_places():
    events: list[tuple] = []
    programs = [
        # F0 asks for a poisoned square and, at once, a shifted row; the square's batch fails
        ("F0", _traced(events, "F0", [[("sq", None, [-1.0]), ("add", 5.0, [7.0])]])),
        ("F1", _traced(events, "F1", [[("sq", None, _rows(1, 0, 1))]])),
        *[(f"G{k}", _traced(events, f"G{k}", [[("sq", None, _rows(k, 0, 1))]])) for k in (2, 3, 4)],
    ]
    out = _run(events, programs, ops=_traced_ops(events, poison=True), batch_size=4, max_programs=2)
    assert events == [
        ("start", "F0"), ("start", "F1"),
        ("sq", [-1.0, 100.0]),  # fails: both programs are closed, F0's "add" row never runs
        ("end", "F0"), ("out", "F0"), ("end", "F1"), ("out", "F1"),
        ("start", "G2"), ("start", "G3"),  # the two places are free again, and only two
        ("sq", [200.0, 300.0]),
        ("end", "G2"), ("out", "G2"), ("end", "G3"), ("out", "G3"),
        ("start", "G4"),
        ("sq", [400.0]),
        ("end", "G4"), ("out", "G4"),
    ]
    assert isinstance(out["F0"], RuntimeError) and out["F0"] is out["F1"]
    assert out["G4"] == [[[160000.0]]]


def test_each_row_of_a_batch_is_taken_at_its_own_programs_point():
    events: list[tuple] = []
    programs = [(k, _traced(events, k, [[("add", 10.0 * k, _rows(k, 0, 3))], [("sq", None, _rows(k, 1, 1))]])) for k in (1, 2)]
    out = _run(events, programs, ops=_traced_ops(events), batch_size=4)
    assert events == [
        ("start", 1), ("start", 2),
        ("add", [100.0, 101.0, 102.0, 200.0], [10.0, 10.0, 10.0, 20.0]),
        ("sq", [110.0]),  # program 1's next ask is the oldest: a kind without points, the op gets None
        ("end", 1), ("out", 1),
        ("add", [201.0, 202.0], [20.0, 20.0]),  # the rest of an ask split across batches
        ("sq", [210.0]),
        ("end", 2), ("out", 2),
    ]
    assert out == {k: [[[v + 10.0 * k for v in _rows(k, 0, 3)]], [[(100.0 * k + 10) ** 2]]] for k in (1, 2)}


def test_asks_of_one_kind_with_and_without_a_point_are_refused():
    events: list[tuple] = []
    programs = [(1, _traced(events, 1, [[("add", 1.0, [1.0])]])), (2, _traced(events, 2, [[("add", None, [2.0])]]))]
    with pytest.raises(AssertionError, match="^asks of one kind either all have a point or none has$"):
        list(run_rows(_traced_ops(events), programs, batch_size=4))


@pytest.mark.parametrize("asks", [[], [Ask("cube", None, torch.ones(1, 1))]], ids=["no asks", "unknown kind"])
def test_asks_of_unknown_kinds_or_none_at_all_are_refused_naming_the_kinds(asks):
    def program():
        yield asks

    with pytest.raises(ValueError, match=r"a program must ask for rows of known kinds \(sq, add\)"):
        list(run_rows(_ops([]), [("e", program())], batch_size=2))
