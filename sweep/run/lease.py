"""One driver per run directory: a lease file (`lease.json`) with the holder and a heartbeat.

    lease = Lease.acquire(store, run_id="demo-…")   # LeaseHeld (exit 2) if a live driver holds it
    lease.start_heartbeat(on_lost=...)               # rewrites the heartbeat every `heartbeat_s`
    ...
    lease.release()

The lease names its holder (host, pid, the pid's start time, run id, a random token) and when it
last beat. Creating it is a create-if-absent; every later change (heartbeat, takeover, release)
is a compare-and-swap on the version the writer last read, so two drivers can never both hold it:

- local (and NFS-style shared) directories: the lease is written to a temporary file and
  hard-linked into place (a link fails when the name exists); changes are made under an
  `fcntl` lock on `.lease.lock` after checking the content is still the one read;
- S3 (and S3-compatible stores): `PutObject` with `If-None-Match: *` creates it, `If-Match:
  <ETag>` changes it, `DeleteObject` with `If-Match` releases it. Ages are measured with the
  server's clock (`Last-Modified` against the response's `Date`), so host clocks may disagree.

A holder is dead when it runs on this host and its pid is gone (or now belongs to a process
started at another time), or when it runs elsewhere and its heartbeat is older than its timeout.
A dead holder's lease is taken over; the takeover is reported to the caller (`Lease.took_over`).
Other filesystems (gs://, memory://) get a best-effort lease without compare-and-swap. The S3
client and its one-line errors are the store's (sweep/run/store.py).

The local backend writes its own temporary file rather than using sweep.files.atomic_write: a
new lease is published with os.link (which fails when the name exists, the create-if-absent
that a rename cannot give), and the file is fsync'ed before it is linked or renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterator, Protocol

from sweep.errors import UserError
from sweep.run.store import Conflict, NoKey, s3_client, s3_errors

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
DEFAULT_TIMEOUT_S = 120.0  # a remote holder silent this long is taken for dead
TIMEOUT_ENV = "VITSWEEP_LEASE_TIMEOUT_S"


class LeaseHeld(UserError):
    """Another live driver holds the run directory (exit status 2)."""


class LeaseLost(Exception):
    """Our lease was replaced or deleted by someone else."""


@dataclass
class Holder:
    """The content of lease.json."""

    host: str
    pid: int
    pid_started: str | None  # start time of `pid` (from /proc), to tell a reused pid apart
    run_id: str | None
    token: str
    acquired_at: str
    heartbeat_at: str
    heartbeat_s: float
    timeout_s: float
    took_over: dict[str, Any] | None = None  # the dead holder this lease replaced

    def describe(self) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        return f"{self.host} pid {self.pid}{run}, started {self.acquired_at}"

    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_text(cls, text: str) -> "Holder | None":
        try:
            data = json.loads(text)
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None


@dataclass
class Seen:
    """One read of the lease: its text, an opaque version for compare-and-swap, its age."""

    text: str
    version: Any
    age_s: float


class Backend(Protocol):
    def read(self) -> Seen | None: ...
    def create(self, text: str) -> Seen | None: ...  # the written version; None: it exists
    def replace(self, text: str, expected: Seen) -> Seen | None: ...  # None: it changed since `expected`
    def delete(self, expected: Seen) -> bool: ...


# ---- the lease ----------------------------------------------------------------------------------
class Lease:
    """A held lease (made by `Lease.acquire`)."""

    def __init__(self, backend: Backend, holder: Holder, seen: Seen, where: str) -> None:
        self.backend = backend
        self.holder = holder
        self.where = where
        self._seen = seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    @property
    def took_over(self) -> dict[str, Any] | None:
        return self.holder.took_over

    @classmethod
    def acquire(
        cls,
        store: Any,
        *,
        run_id: str | None = None,
        timeout_s: float | None = None,
        heartbeat_s: float | None = None,
        backend: Backend | None = None,
    ) -> "Lease":
        """Take the lease of `store`'s run directory, or raise LeaseHeld naming the live holder."""
        try:
            timeout_s = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        except ValueError:
            raise UserError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ.get(TIMEOUT_ENV)!r}") from None
        if not timeout_s > 0:
            raise UserError(f"{TIMEOUT_ENV} must be positive, got {timeout_s}")
        heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.2, timeout_s / 4)
        backend = backend or backend_for(store)
        where = f"{store.root}/{LEASE_FILE}"
        now = _now()
        mine = Holder(
            host=socket.gethostname(), pid=os.getpid(), pid_started=_pid_started(os.getpid()), run_id=run_id,
            token=uuid.uuid4().hex, acquired_at=now, heartbeat_at=now, heartbeat_s=heartbeat_s, timeout_s=timeout_s,
        )
        for _ in range(5):  # a few rounds: another driver may be taking over at the same moment
            seen = backend.read()
            if seen is None:
                written = backend.create(mine.to_text())
                if written is not None:
                    return cls(backend, mine, written, where)
                continue
            current = Holder.from_text(seen.text)
            _refuse_live(store.root, current, seen)
            mine.took_over = {
                **(asdict(current) if current is not None else {"unreadable": seen.text[:200]}),
                "age_s": round(seen.age_s, 1), "taken_over_at": _now(),
            }
            written = backend.replace(mine.to_text(), seen)
            if written is not None:
                log.warning("took over the lease of a dead driver: %s", current.describe() if current else "unreadable")
                return cls(backend, mine, written, where)
        raise LeaseHeld(f"{store.root}: could not take the run directory's lease (another driver keeps changing it)")

    def set_run_id(self, run_id: str) -> None:
        with self._lock:
            self.holder.run_id = run_id
            self._write()

    def beat(self) -> None:
        """Rewrite the heartbeat now; raises LeaseLost if someone else changed the lease."""
        with self._lock:
            self.holder.heartbeat_at = _now()
            self._write()

    def _write(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)
        written = self.backend.replace(self.holder.to_text(), self._seen)
        if written is None:
            seen = self.backend.read()
            other = Holder.from_text(seen.text) if seen else None
            self.lost = f"the lease of {self.where} was taken by {other.describe()}" if other else f"{self.where} was deleted"
            raise LeaseLost(self.lost)
        self._seen = written

    def start_heartbeat(self, on_lost: Callable[[str], None]) -> None:
        """Beat every `heartbeat_s` in a daemon thread; call `on_lost(message)` once if the lease is lost."""

        def loop() -> None:
            while not self._stop.wait(self.holder.heartbeat_s):
                try:
                    self.beat()
                except LeaseLost as err:
                    on_lost(str(err))
                    return
                except Exception as err:  # a network hiccup: try again at the next beat
                    log.warning("lease heartbeat failed (will retry): %s", err)

        self._thread = threading.Thread(target=loop, name="vitsweep-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self.lost:
                return
            try:
                self.backend.delete(self._seen)
            except Exception as err:  # the next driver will find the pid gone or the heartbeat stale
                log.warning("could not delete the lease %s: %s", self.where, err)
            self.lost = "released"


def check_free(store: Any, backend: Backend | None = None) -> None:
    """Raise LeaseHeld if a live driver holds `store`'s lease (a cheap early check: `acquire`
    decides for real)."""
    backend = backend or backend_for(store)
    seen = backend.read()
    if seen is not None:
        _refuse_live(store.root, Holder.from_text(seen.text), seen)


def _refuse_live(root: str, current: Holder | None, seen: Seen) -> None:
    if current is not None and _alive(current, seen.age_s):
        raise LeaseHeld(
            f"{root} is being driven by {current.describe()}, last heartbeat "
            f"{seen.age_s:.0f} s ago; wait for it to finish or stop it (a dead driver's lease is "
            f"taken over: same host when its pid is gone, else after {current.timeout_s:.0f} s without heartbeat)"
        )


def _alive(holder: Holder, age_s: float) -> bool:
    if holder.host == socket.gethostname():
        if not _pid_exists(holder.pid):
            return False
        started = _pid_started(holder.pid)
        return started is None or holder.pid_started is None or started == holder.pid_started
    return age_s <= float(holder.timeout_s or DEFAULT_TIMEOUT_S)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---- backends ------------------------------------------------------------------------------------
def backend_for(store: Any) -> Backend:
    """The lease backend of a RunStore: local file, S3 object, or best-effort file."""
    if store.is_local:
        return LocalBackend(Path(store.base))
    if store.root.startswith(("s3://", "s3a://")):
        bucket, _, prefix = store.root.split("://", 1)[1].partition("/")
        return S3Backend(bucket, f"{prefix.strip('/')}/{LEASE_FILE}".lstrip("/"))
    return StoreBackend(store)


class LocalBackend:
    """lease.json in a local (or shared) folder; changes under an fcntl lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LEASE_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lease.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> Seen | None:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Seen(text, text, max(0.0, age))

    def _write_tmp(self, text: str) -> Path:
        tmp = self.folder / f".{LEASE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return tmp

    def create(self, text: str) -> Seen | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(text)
        try:
            with self._locked():
                os.link(tmp, self.path)  # atomic: fails when the lease exists
            return Seen(text, text, 0.0)
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def replace(self, text: str, expected: Seen) -> Seen | None:
        tmp = self._write_tmp(text)
        try:
            with self._locked():
                current = self.read()
                if current is None or current.version != expected.version:
                    return None
                os.replace(tmp, self.path)
                return Seen(text, text, 0.0)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, expected: Seen) -> bool:
        with self._locked():
            current = self.read()
            if current is None or current.version != expected.version:
                return False
            self.path.unlink()
            return True


class S3Backend:
    """The lease as one S3 object, changed only by conditional requests."""

    def __init__(self, bucket: str, key: str, client: Any = None) -> None:
        self.bucket, self.key = bucket, key
        self.client = client or s3_client()

    def read(self) -> Seen | None:
        try:
            with s3_errors(f"s3://{self.bucket}/{self.key}"):
                response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except NoKey:
            return None
        text = response["Body"].read().decode()
        server_now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - response["LastModified"]).total_seconds()
        return Seen(text, response["ETag"], max(0.0, age))

    def _put(self, text: str, **condition: str) -> Seen | None:
        try:
            with s3_errors(f"s3://{self.bucket}/{self.key}", conflict_ok=True):
                response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=text.encode(), **condition)
            return Seen(text, response["ETag"], 0.0)
        except Conflict:
            return None

    def create(self, text: str) -> Seen | None:
        return self._put(text, IfNoneMatch="*")

    def replace(self, text: str, expected: Seen) -> Seen | None:
        return self._put(text, IfMatch=expected.version)

    def delete(self, expected: Seen) -> bool:
        try:
            with s3_errors(f"s3://{self.bucket}/{self.key}", conflict_ok=True):
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=expected.version)
            return True
        except (Conflict, NoKey):
            return False


class StoreBackend:
    """Best effort for filesystems without compare-and-swap: read, compare, write."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self) -> Seen | None:
        text = self.store.read_text(LEASE_FILE)
        if text is None:
            return None
        holder = Holder.from_text(text)
        age = 0.0
        if holder is not None:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(holder.heartbeat_at)).total_seconds()
        return Seen(text, text, max(0.0, age))

    def create(self, text: str) -> Seen | None:
        if self.read() is not None:
            return None
        self.store.write_text(LEASE_FILE, text)
        return Seen(text, text, 0.0)

    def replace(self, text: str, expected: Seen) -> Seen | None:
        current = self.read()
        if current is None or current.version != expected.version:
            return None
        self.store.write_text(LEASE_FILE, text)
        return Seen(text, text, 0.0)

    def delete(self, expected: Seen) -> bool:
        current = self.read()
        if current is None or current.version != expected.version:
            return False
        self.store.fs.delete_file(self.store.path(LEASE_FILE))
        return True
