"""Two jobs on one root: a per-root lock held for each stage, and Delta conflict retries where no lock can be.

    with root_lock(cfg, "ingest"):                 # waits while another job runs a stage on this root
        report = run_ingest(cfg, spark)
    retry_conflicts(lambda: write(), "merge into quarantine")   # Delta's optimistic concurrency, retried

**Lock.** Locally every stage holds an exclusive `fcntl.flock` on `<paths.root>/_veclip.lock` for its
whole run (jobs, the pipeline's stages, notebook stages). A second job on the same root waits, logging
who holds the lock (pid, host, job, since) every minute; with `VECLIP_LOCK_WAIT_S` set it waits at most
that many seconds and then fails with `RootLocked`, naming the holder (0: fail at once). The kernel drops
the lock when its process dies, so a killed job never leaves a stale lock. Re-entrant within a process
(the pipeline job holds it per stage, not for the whole chain).

**No lock where a local file cannot mean anything**: metastore tables (`tables.schema`, Unity Catalog),
roots that are URIs (`dbfs:/`, `s3://`, `abfss://`, ...) or Databricks paths (`/dbfs`, `/Volumes`), and
any session on Databricks: jobs there may run on other machines. There Delta's optimistic concurrency
decides, and `retry_conflicts` retries a create or MERGE that lost a race (`ConcurrentAppend`,
`ProtocolChanged`, `MetadataChanged`, "already exists", ...) with a jittered back-off: the MERGE is by key,
so a retry inserts only what the other job did not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import socket
import time
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional, TypeVar

log = logging.getLogger(__name__)

LOCK_FILE = "_veclip.lock"
WAIT_ENV = "VECLIP_LOCK_WAIT_S"
_REMOTE_PREFIXES = ("/dbfs", "/Volumes", "/Workspace")
# Delta's concurrent-modification errors (delta.exceptions, and their JVM names) and a lost create race.
CONFLICTS = ("ConcurrentAppend", "ConcurrentDeleteRead", "ConcurrentDeleteDelete", "ConcurrentTransaction",
             "ConcurrentWrite", "DeltaConcurrentModification", "MetadataChanged", "ProtocolChanged",
             "already exists", "DELTA_PATH_EXISTS", "TABLE_OR_VIEW_ALREADY_EXISTS")
_held: dict[str, int] = {}   # lock path -> depth, for this process
T = TypeVar("T")


class RootLocked(RuntimeError):
    """Another job holds the root's lock and the wait allowed (VECLIP_LOCK_WAIT_S) ran out."""


def lock_path(cfg) -> Optional[str]:
    """The root's lock file, or None where a local lock means nothing (metastore tables, cloud paths)."""
    root = str(cfg.paths.root)
    if cfg.tables.schema_ is not None or "://" in root or root.startswith("dbfs:") \
            or root.startswith(_REMOTE_PREFIXES) or "DATABRICKS_RUNTIME_VERSION" in os.environ:
        return None
    return os.path.join(os.path.abspath(root), LOCK_FILE)


def wait_limit() -> Optional[float]:
    """Seconds to wait for another job's lock: VECLIP_LOCK_WAIT_S, or None (as long as it takes)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    return float(raw) if raw else None


def holder(path: str) -> str:
    """Who holds the lock, as the holder wrote it ("pid 123 on host, job ingest, since ...")."""
    try:
        with open(path, encoding="utf-8") as f:
            h = json.loads(f.read() or "{}")
        return f"pid {h.get('pid')} on {h.get('host')}, job {h.get('job')}, since {h.get('since')}"
    except (OSError, ValueError):
        return "an unknown process"


def _acquire(fd: int, path: str, job: str, wait_s: Optional[float], poll_s: float) -> None:
    start, last_log = time.monotonic(), 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = time.monotonic() - start
            if wait_s is not None and waited >= wait_s:
                raise RootLocked(f"{job}: another job is running on this root ({holder(path)}); lock file {path}. "
                                 f"Wait for it to finish, or use another paths.root ({WAIT_ENV}={wait_s:g})") from None
            if waited - last_log >= 60 or last_log == 0.0:
                log.warning("%s: waiting for the root lock %s, held by %s", job, path, holder(path))
                last_log = max(waited, 1e-9)
            time.sleep(poll_s if wait_s is None else min(poll_s, max(wait_s - waited, 0.01)))


@contextlib.contextmanager
def root_lock(cfg, job: str, wait_s: Optional[float] = None, poll_s: float = 0.5) -> Iterator[Optional[str]]:
    """Hold the root's exclusive lock while the block runs (yields the lock path, or None: no lock here).
    `wait_s` (default VECLIP_LOCK_WAIT_S, else no limit): how long to wait for another job."""
    path = lock_path(cfg)
    if path is None:
        yield None
        return
    if _held.get(path):          # this process holds it already (a stage inside a locked job)
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, job, wait_limit() if wait_s is None else wait_s, poll_s)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "job": job,
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _held[path] = 1
        try:
            yield path
        finally:
            _held[path] = 0
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_conflict(err: BaseException) -> bool:
    """Did a Delta write fail because another writer committed first (retrying is safe)?"""
    text = f"{type(err).__name__}: {err}"
    return any(c in text for c in CONFLICTS)


def retry_conflicts(write: Callable[[], T], what: str, attempts: int = 8, base_s: float = 0.5) -> T:
    """`write()`, again after a jittered back-off each time it loses a Delta race; other errors raise at once.
    The last conflict raises too, with `what` and the number of attempts in the message."""
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as err:  # noqa: BLE001 - py4j/pyspark raise many classes for one Delta conflict
            if not is_conflict(err):
                raise
            if attempt == attempts:
                raise RuntimeError(f"{what}: still conflicting with another writer after {attempts} attempts "
                                   f"({type(err).__name__}); the failed attempt committed nothing, rerun the job"
                                   ) from err
            delay = base_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s: lost a race with another writer (%s), retry %d/%d in %.1fs",
                        what, type(err).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
