"""Two jobs on one root: the root lock (real processes), Delta conflict retries, and each write's own
commit version in its accounting (two real processes, real local Spark sessions, one real Delta table)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from veclip.config import load_config
from veclip.locking import RootLocked, is_conflict, lock_path, retry_conflicts, root_lock

DRIVER = REPO / "tests" / "concurrent_job.py"


def config(root, *overrides):
    return load_config(str(REPO / "conf" / "local.yaml"), [f"paths.root={root}", *overrides])


def hold(root: str, name: str, seconds: float, log: str) -> None:
    """In a child process: take the root lock, note when it was held, keep it `seconds`."""
    with root_lock(config(root), name):
        start = time.time()
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(json.dumps({"name": name, "start": start, "end": time.time()}) + "\n")


def test_two_processes_take_turns_on_the_root_lock(tmp_path):
    log = str(tmp_path / "held.jsonl")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=hold, args=(str(tmp_path), f"job{i}", 1.0, log)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = sorted((json.loads(line) for line in open(log)), key=lambda h: h["start"])
    assert b["start"] >= a["end"], "the two holders overlapped"


def test_a_bounded_wait_fails_clearly_naming_the_holder(tmp_path):
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=hold, args=(str(tmp_path), "ingest", 8.0, str(tmp_path / "held.jsonl")))
    child.start()
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "_veclip.lock").exists() or not (tmp_path / "_veclip.lock").read_text():
            assert time.monotonic() < deadline, "the child never took the lock"
            time.sleep(0.05)
        with pytest.raises(RootLocked, match=rf"another job is running on this root \(pid {child.pid} .*job ingest"):
            with root_lock(config(tmp_path), "dedupe", wait_s=0.3):
                pass
    finally:
        child.join(30)
    with root_lock(config(tmp_path), "dedupe", wait_s=0):   # free again once the holder is done
        pass


def test_the_lock_is_reentrant_and_absent_where_a_local_file_means_nothing(tmp_path):
    cfg = config(tmp_path)
    with root_lock(cfg, "pipeline") as outer, root_lock(cfg, "pipeline stage ingest", wait_s=0) as inner:
        assert outer == inner == str(tmp_path / "_veclip.lock")
    assert lock_path(config(tmp_path, "tables.catalog=main", "tables.schema=veclip")) is None
    for root in ("/Volumes/main/veclip/work", "/dbfs/veclip"):
        assert lock_path(config(root)) is None


class ConcurrentAppendException(Exception):
    """The name Delta's Python API gives a lost append race (delta.exceptions)."""


def test_retry_conflicts_retries_lost_races_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("Files were added to the root of the table by a concurrent update")
        return "done"

    assert retry_conflicts(flaky, "merge into 'quarantine'", base_s=0.01) == "done" and len(calls) == 3
    assert is_conflict(Exception("[DELTA_PATH_EXISTS] Cannot write to already existent path"))
    assert not is_conflict(ValueError("key column(s) ['key'] not in []"))
    with pytest.raises(ValueError):
        retry_conflicts(lambda: (_ for _ in ()).throw(ValueError("bad")), "merge", base_s=0.01)
    with pytest.raises(RuntimeError, match="still conflicting with another writer after 2 attempts"):
        retry_conflicts(lambda: (_ for _ in ()).throw(ConcurrentAppendException("x")), "merge", attempts=2,
                        base_s=0.01)


def run_two(root, via: str, keys: tuple[str, str], hold_s: float = 0.0, env: dict | None = None):
    """Start jobs a and b at once (a barrier after Spark is up); return their exit codes, outputs, results."""
    env = {**os.environ, **(env or {})}
    procs = [subprocess.Popen([sys.executable, str(DRIVER), str(root), name, "--keys", k, "--peers", "a,b",
                               "--via", via, "--hold-s", str(hold_s)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, k in zip("ab", keys)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    results = {}
    for name in "ab":
        path = root / f"result-{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return [p.returncode for p in procs], outs, results


def check_table(spark, root, results: dict, expected_keys: set[str]) -> None:
    """Every row once; each job's counts and version are those of its own commit."""
    from delta.tables import DeltaTable

    table = spark.read.format("delta").load(str(root / "quarantine"))
    keys = [r["key"] for r in table.select("key").collect()]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys
    assert sum(r["inserted"] for r in results.values()) == len(expected_keys)
    history = {r["version"]: r["userMetadata"] for r in
               DeltaTable.forPath(spark, str(root / "quarantine")).history().collect()}
    for r in results.values():
        assert r["user_metadata"].startswith(f"veclip:quarantine:{r['pid']}:")
        assert history[r["version"]] == r["user_metadata"]
    assert len({r["version"] for r in results.values()}) == len(results)


def test_two_jobs_on_one_root_serialise_and_write_every_row_once(spark, tmp_path):
    codes, outs, results = run_two(tmp_path, "job", ("0:60", "30:90"), hold_s=2.0)
    assert codes == [0, 0], outs
    a, b = sorted(results.values(), key=lambda r: r["start"])
    assert b["start"] >= a["end"], "the second job wrote while the first held the root"
    assert (a["inserted"], b["inserted"]) == (60, 30)     # the second inserts only what the first did not
    check_table(spark, tmp_path, results, {f"k{i:04d}" for i in range(90)})


def test_a_job_that_cannot_wait_fails_clearly_and_writes_nothing(spark, tmp_path):
    codes, outs, results = run_two(tmp_path, "job", ("0:40", "40:80"), hold_s=8.0, env={"VECLIP_LOCK_WAIT_S": "0"})
    assert sorted(codes) == [0, 3], outs
    loser = "ab"[codes.index(3)]
    assert "another job is running on this root" in outs[codes.index(3)] and loser not in results
    winner = results["ab"[codes.index(0)]]
    check_table(spark, tmp_path, {"w": winner}, {f"k{i:04d}" for i in range(*((0, 40) if loser == "b" else (40, 80)))})


def test_without_a_lock_delta_races_are_retried_and_counts_are_each_jobs_own(spark, tmp_path):
    # Both create `quarantine` at the same moment and MERGE overlapping keys, with no lock (as with
    # metastore tables or cloud roots): one loses the create race and retries as a MERGE.
    codes, outs, results = run_two(tmp_path, "tables", ("0:60", "30:90"))
    assert codes == [0, 0], outs
    print("\nretries:", [o.count("lost a race with another writer") for o in outs])
    check_table(spark, tmp_path, results, {f"k{i:04d}" for i in range(90)})
