"""The continuous-batching loop (sweep/probes/loop.py) on a counting task written here, whose
rows are plain counters: every result, every step call and every sync point is known by hand.

An item (name, need, budget) is done after `need` steps; `max_calls` reports `budget` (>= need).
The task counts every `step` call, so each result says after how many calls the loop noticed it.
The expected traces below are worked out by hand from the loop's rules: a sync after at most
`sync_every` calls, or earlier exactly when a row reaches its budget; finished rows are handed
out in slot order, their slots refilled from the iterator in order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sweep.probes.loop import State, run_continuous

Item = tuple[str, int, int]  # (name, steps until done, max_calls)


class Counter:
    """Rows count their own steps; a row is done once it has taken `need` steps. With `veto`,
    `check` sends the named rows back once, the first time it sees them done."""

    def __init__(self, veto: Iterable[str] = (), with_check: bool = False) -> None:
        self.calls = 0  # step calls so far
        self.syncs: list[int] = []  # the call count at every `check`
        self.veto = set(veto)
        self.vetoed: set[str] = set()
        self.names: list[str] = []  # item names by code
        self.code: dict[str, int] = {}
        if with_check or self.veto:
            self.check = self._check

    def new_state(self, items: list[Item]) -> State:
        n = len(items)
        return {
            "steps": torch.zeros(n, dtype=torch.long),
            "need": torch.tensor([need for _, need, _ in items], dtype=torch.long),
            "row": torch.tensor([self.code[name] for name, _, _ in items], dtype=torch.long),
            "done": torch.zeros(n, dtype=torch.bool),
        }

    def step(self, state: State) -> None:
        self.calls += 1
        state["steps"] += (~state["done"]).long()
        state["done"] |= state["steps"] >= state["need"]

    def _check(self, state: State) -> None:
        self.syncs.append(self.calls)
        rows = torch.tensor([name in self.veto and name not in self.vetoed for name in self._in_flight(state)])
        back = rows & state["done"]
        for i in back.nonzero().flatten().tolist():
            self.vetoed.add(self._in_flight(state)[i])
        state["done"] &= ~back
        state["need"] += back.long()  # sent back: one more step to go

    def _in_flight(self, state: State) -> list[str]:
        codes = state["row"].tolist()
        return [self.names[c] for c in codes]

    def finish(self, items: list[Item], state: State) -> Iterable[tuple[str, int, int]]:
        assert [self.code[name] for name, _, _ in items] == state["row"].tolist()  # rows match items
        for (name, _, _), steps in zip(items, state["steps"].tolist()):
            yield name, steps, self.calls

    def max_calls(self, item: Item) -> int:
        return item[2]


def _run(items: list[Item], batch_size: int, sync_every: int | None, task: Counter | None = None) -> tuple[list, Counter]:
    task = task or Counter()
    task.names = [name for name, _, _ in items]
    task.code = {name: i for i, name in enumerate(task.names)}
    if sync_every is None:  # the loop's default
        return list(run_continuous(task, iter(items), batch_size)), task
    return list(run_continuous(task, iter(items), batch_size, sync_every=sync_every)), task


def test_rows_sync_exactly_at_their_budget_and_slots_refill_in_order() -> None:
    # slots [a, b]: sync at 3 (a's budget), c takes a's slot; sync at 5 (c: 3 + 2), d takes c's
    # slot; sync at 7 (b); then d alone (admitted at 5, need 5): sync at 10
    items = [("a", 3, 3), ("b", 7, 7), ("c", 2, 2), ("d", 5, 5)]
    results, task = _run(items, batch_size=2, sync_every=4, task=Counter(with_check=True))
    assert results == [("a", 3, 3), ("c", 2, 5), ("b", 7, 7), ("d", 5, 10)]
    assert task.syncs == [3, 5, 7, 10] and task.calls == 10


def test_rows_that_finish_before_their_budget_wait_for_the_next_regular_sync() -> None:
    # budgets of 100: syncs every 4 calls; b (need 6) is seen at 8, a (need 3) at 4, c admitted at 4
    # (need 1) is seen at 8 too; both leave in slot order (b's slot first, then c's)
    items = [("a", 3, 100), ("b", 6, 100), ("c", 1, 100)]
    results, task = _run(items, batch_size=2, sync_every=4, task=Counter(with_check=True))
    assert results == [("a", 3, 4), ("b", 6, 8), ("c", 1, 8)]
    assert task.syncs == [4, 8]


def test_the_default_sync_period_is_ten_calls() -> None:
    results, task = _run([("a", 3, 100), ("b", 12, 100)], batch_size=2, sync_every=None, task=Counter(with_check=True))
    assert results == [("a", 3, 10), ("b", 12, 20)] and task.syncs == [10, 20]


def test_a_budget_of_one_and_more_slots_than_items() -> None:
    results, task = _run([("a", 1, 1), ("b", 2, 2)], batch_size=5, sync_every=10, task=Counter(with_check=True))
    assert results == [("a", 1, 1), ("b", 2, 2)] and task.syncs == [1, 2]


def test_one_slot_runs_items_back_to_back() -> None:
    items = [("a", 2, 2), ("b", 3, 3), ("c", 1, 1)]
    results, task = _run(items, batch_size=1, sync_every=10, task=Counter(with_check=True))
    assert results == [("a", 2, 2), ("b", 3, 5), ("c", 1, 6)] and task.syncs == [2, 5, 6]


def test_a_row_sent_back_by_check_waits_one_ordinary_round_or_the_next_budget() -> None:
    # a (budget 2) is vetoed at 2 and needs one more step; b's budget (9) is the next sync point
    # only if it comes before a full round of sync_every = 5: 2 + 5 = 7 < 9, so the sync is at 7
    items = [("a", 2, 2), ("b", 9, 9)]
    results, task = _run(items, batch_size=2, sync_every=5, task=Counter(veto={"a"}))
    assert results == [("a", 3, 7), ("b", 9, 9)]
    assert task.syncs == [2, 7, 9]
    # alone, a vetoed row waits a full round
    results, task = _run([("a", 2, 2)], batch_size=2, sync_every=5, task=Counter(veto={"a"}))
    assert results == [("a", 3, 7)] and task.syncs == [2, 7]
    # with another row's budget 2 calls away, that is the next sync (not a single call, not 5),
    # and a, done again by then, leaves with b in slot order
    results, task = _run([("a", 2, 2), ("b", 4, 4)], batch_size=2, sync_every=5, task=Counter(veto={"a"}))
    assert results == [("a", 3, 4), ("b", 4, 4)] and task.syncs == [2, 4]


def test_kept_rows_keep_their_state_across_refills() -> None:
    # at 1: i1, i2 leave, i3, i4 come in; at 2: i3 leaves, i5 in; at 3: i4 leaves, i6 in;
    # then the budgets left are i0 2, i5 6, i6 3: i0 leaves at 5, i6 at 6, i5 (in at 2, 7 steps) at 9
    items = [(f"i{n}", need, need) for n, need in enumerate([5, 1, 1, 1, 2, 7, 3])]
    results, task = _run(items, batch_size=3, sync_every=10)
    assert results == [("i1", 1, 1), ("i2", 1, 1), ("i3", 1, 2), ("i4", 2, 3), ("i0", 5, 5), ("i6", 3, 6), ("i5", 7, 9)]
    assert task.calls == 9


def test_nothing_to_do() -> None:
    task = Counter(with_check=True)
    assert list(run_continuous(task, iter([]), 4)) == [] and task.calls == 0 and task.syncs == []
