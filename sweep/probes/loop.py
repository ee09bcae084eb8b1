"""The shared batched loop with per-sample stopping and continuous batching.

A `SlotTask` keeps a batch of items as a dict of tensors with a leading batch dimension (its
"state"). The loop calls `task.step(state)` repeatedly; each step is one forward (and usually one
backward) for the whole batch and must freeze rows that are done (state["done"], bool (B,)).
Only every `sync_every` steps does the loop look at `done` on the host: finished rows are handed
to `task.finish`, and their slots are refilled from the item iterator. No other host
synchronisation happens inside the loop. Because the host knows how many steps each row has
taken since it was admitted, it also syncs exactly when a row reaches its step budget
(`task.max_calls`), so no row idles after its last step while waiting for the next sync.

A task may also define `check(state)`: called at every sync, before `done` is read, to settle
rows the step could only flag (e.g. `match` confirms a bf16 stopping test in fp32 there).

Rows never influence each other (a ViT in eval mode is row-independent, and every per-item random
draw is seeded by the item itself), so an item's result does not depend on its batch neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar

import torch

Item = TypeVar("Item")
Out = TypeVar("Out")
State = dict[str, torch.Tensor]


class SlotTask(Protocol, Generic[Item, Out]):
    def new_state(self, items: list[Item]) -> State:
        """State rows for new items; must include "done" (bool) and "steps" (int)."""

    def step(self, state: State) -> None:
        """Advance every row that is not done by one step, in place; update "done"."""

    def finish(self, items: list[Item], state: State) -> Iterable[Out]:
        """Turn finished rows into results."""

    def max_calls(self, item: Item) -> int:
        """How many `step` calls after its admission an item is done (at the latest, unless a
        `check` sent it back to work)."""


def run_continuous(
    task: SlotTask[Any, Out],
    items: Iterable[Any],
    batch_size: int,
    sync_every: int = 10,
) -> Iterator[Out]:
    """Run `task` over `items` with at most `batch_size` rows in flight; yield results as rows finish."""
    source = iter(items)
    slots: list[Any] = list(islice(source, batch_size))
    if not slots:
        return
    state = task.new_state(slots)
    budget = [task.max_calls(item) for item in slots]  # step calls left before each row must be done
    check = getattr(task, "check", None)
    while slots:
        # a row past its budget (sent back by `check`) waits at most one ordinary round
        calls = max(1, min(sync_every, *(left for left in budget if left > 0), sync_every))
        for _ in range(calls):
            task.step(state)
        budget = [left - calls for left in budget]
        if check is not None:
            check(state)
        done = state["done"].cpu()  # the one host sync per round
        if not bool(done.any()):
            continue
        finished = done.nonzero().flatten()
        kept = (~done).nonzero().flatten()
        yield from task.finish([slots[i] for i in finished.tolist()], _rows(state, finished))
        slots = [slots[i] for i in kept.tolist()]
        budget = [budget[i] for i in kept.tolist()]
        state = _rows(state, kept)
        refill = list(islice(source, batch_size - len(slots)))
        if refill:
            fresh = task.new_state(refill)
            state = {key: torch.cat([state[key], fresh[key]]) for key in state} if slots else fresh
            slots.extend(refill)
            budget.extend(task.max_calls(item) for item in refill)


def _rows(state: State, index: torch.Tensor) -> State:
    index = index.to(state["done"].device)
    return {key: value.index_select(0, index) for key, value in state.items()}
