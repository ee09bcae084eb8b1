"""Progress of a sweep: a live terminal bar and `progress.json` in the run directory.

`units_done` counts every unit finished ok, including the `units_skipped` ones a rerun found
already done, so `units_done / units_total` is the share of the sweep that is queryable;
`pairs_done` and `pairs_error` count the whole run as well (the skipped units' pairs included);
`pairs_per_s` and `eta_s` are about this invocation.

Without a terminal (a log file, `ray job submit`) or with `show=False`, each finished or failed
unit is one line on stderr instead of a bar.

`progress.json` (format in docs/results.md) is rewritten atomically as units finish, at most
every `min_interval_s`, and always when the state changes, so a dashboard can follow a running
sweep.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

from tqdm import tqdm

from sweep.run.store import RunStore

PROGRESS_FILE = "progress.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Progress:
    """Counts units and pairs; renders a tqdm bar and writes progress.json."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        *,
        units_total: int,
        units_skipped: int = 0,
        pairs_skipped: int = 0,
        pairs_error_skipped: int = 0,
        show: bool | None = None,
        min_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.units_total = units_total
        self.units_skipped = units_skipped
        self.units_done = units_skipped  # finished ok, this session or an earlier one
        self.units_failed = 0
        self.pairs_done = pairs_skipped  # ok pairs of the whole run
        self.pairs_error = pairs_error_skipped
        self.pairs_now = 0  # pairs (ok or not) this invocation: the rate
        self.failures: list[dict[str, str]] = []
        self.state = "running"
        self.started_at = _now()
        self._t0 = time.monotonic()
        self._last_write = 0.0
        self.min_interval_s = min_interval_s
        show = sys.stderr.isatty() if show is None else show
        self.lines = not show  # a line per unit where there is no bar
        self.bar = tqdm(
            total=units_total,
            initial=units_skipped,
            unit="unit",
            desc="sweep",
            disable=not show,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        self.write(force=True)

    # ---- events ------------------------------------------------------------------------------
    def unit_done(self, n_pairs: int, n_error: int, label: str = "") -> None:
        self.units_done += 1
        self.pairs_done += n_pairs - n_error
        self.pairs_error += n_error
        self.pairs_now += n_pairs
        self._line(f"done {label}: {n_pairs - n_error} pairs ok, {n_error} with errors")
        self._advance()

    def unit_failed(self, unit_id: str, error: str, label: str = "") -> None:
        self.units_failed += 1
        self.failures.append({"unit_id": unit_id, "unit": label or unit_id, "error": error})
        self._line(f"FAILED {label or unit_id}: {error}")
        self._advance()

    def unit_retry(self, unit_id: str, error: str) -> None:
        self.bar.write(f"retrying unit {unit_id}: {error}")

    def finish(self, state: str) -> None:
        """state: finished | interrupted | failed."""
        self.state = state
        self.write(force=True)
        self.bar.close()

    # ---- output ------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    @property
    def pairs_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.pairs_now / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        finished = self.units_done - self.units_skipped + self.units_failed  # this session
        left = self.units_total - self.units_done - self.units_failed
        if self.state != "running":
            return 0.0 if left == 0 else None
        if finished == 0:
            return None
        return left * self.elapsed_s / finished

    def snapshot(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "units_total": self.units_total,
            "units_done": self.units_done,
            "units_failed": self.units_failed,
            "units_skipped": self.units_skipped,
            "pairs_done": self.pairs_done,
            "pairs_error": self.pairs_error,
            "pairs_per_s": round(self.pairs_per_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "started_at": self.started_at,
            "updated_at": _now(),
            "failures": self.failures,
        }

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval_s:
            self.store.write_json(PROGRESS_FILE, self.snapshot())
            self._last_write = now

    def _line(self, text: str) -> None:
        if self.lines:
            finished = self.units_done + self.units_failed
            print(f"[{finished}/{self.units_total} units, {self.elapsed_s:.0f} s] {text}", file=sys.stderr, flush=True)

    def _advance(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix(pairs=self.pairs_done, pairs_s=f"{self.pairs_per_s:.1f}", failed=self.units_failed, refresh=False)
        self.write()
