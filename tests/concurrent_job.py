"""One of two jobs that write the same `quarantine` table on one root at the same moment (run by
tests/test_concurrent_jobs.py as a real process, with a real local Spark session and Delta table).

    python tests/concurrent_job.py ROOT NAME --keys 0:60 --via job|tables [--hold-s 3]

Starts Spark, writes `<root>/ready-NAME`, waits until every name in --peers is ready (a barrier, so
both jobs write at once), then MERGEs quarantine rows for keys k<first>..k<last-1>:
- `--via job`: as a job does, through `veclip.cli.run_job` (the root's lock, an MLflow run, a report);
- `--via tables`: `Tables.merge` with no lock, as on Databricks where only Delta's concurrency control decides.
Writes `<root>/result-NAME.json`: the MergeResult, the userMetadata of the commit it names, and when
the write started and ended. The exit code is the job's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone


def rows(spark, first: int, last: int, name: str):
    from veclip.schemas import QUARANTINE

    now = datetime.now(timezone.utc)
    data = [(f"k{i:04d}", "ingest", "not_an_image", f"written by {name}", None, None, name, None, now)
            for i in range(first, last)]
    return spark.createDataFrame(data, QUARANTINE)


def barrier(root: str, name: str, peers: list[str], timeout_s: float = 300) -> None:
    open(os.path.join(root, f"ready-{name}"), "w").close()
    deadline = time.monotonic() + timeout_s
    while not all(os.path.exists(os.path.join(root, f"ready-{p}")) for p in peers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: peers {peers} never became ready")
        time.sleep(0.05)


def write(tables, df, name: str, hold_s: float) -> dict:
    t0 = time.time()
    result = tables.merge("quarantine", df, ["key", "stage"])
    time.sleep(hold_s)          # a stage that goes on working after its write
    meta = (tables._delta("quarantine").history().where(f"version = {result.version}")
            .select("userMetadata").first()[0])
    return {"name": name, "inserted": result.inserted, "updated": result.updated, "version": result.version,
            "user_metadata": meta, "pid": os.getpid(), "start": t0, "end": time.time()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("name")
    p.add_argument("--keys", required=True, help="FIRST:LAST")
    p.add_argument("--peers", default="", help="comma-separated names to wait for")
    p.add_argument("--via", choices=["job", "tables"], required=True)
    p.add_argument("--hold-s", type=float, default=0.0)
    a = p.parse_args(argv)
    first, last = (int(x) for x in a.keys.split(":"))
    peers = [x for x in a.peers.split(",") if x]
    out = os.path.join(a.root, f"result-{a.name}.json")
    overrides = [f"paths.root={a.root}", "spark.master=local[1]", "spark.shuffle_partitions=1",
                 "spark.driver_memory=1g", "spark.log_level=ERROR"]

    from veclip.config import load_config
    from veclip.spark import get_spark
    from veclip.tables import Tables

    profile = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "local.yaml")
    cfg = load_config(profile, overrides)
    spark = get_spark(cfg)   # run_job below reuses this active session
    barrier(a.root, a.name, peers)
    if a.via == "tables":
        result = write(Tables(cfg, spark), rows(spark, first, last, a.name), a.name, a.hold_s)
        json.dump(result, open(out, "w"))
        spark.stop()
        return 0

    from veclip.cli import run_job
    from veclip.stages import DATA, Stage

    JOB.update(first=first, last=last, name=a.name, hold_s=a.hold_s, out=out)
    # This script's `stage` below, as a registry entry: `__main__` is this running script.
    job = Stage("concurrent", "__main__:stage", "two jobs, one quarantine table", DATA, writes=("quarantine",))
    return run_job("concurrent", job, profile, overrides)


JOB: dict = {}   # what `stage` writes, set by main()


def stage(cfg, spark):
    """The job's stage: MERGE this job's quarantine rows, as a stage would, and report them."""
    from veclip.report import StageReport
    from veclip.tables import Tables

    first, last, name = JOB["first"], JOB["last"], JOB["name"]
    result = write(Tables(cfg, spark), rows(spark, first, last, name), name, JOB["hold_s"])
    json.dump(result, open(JOB["out"], "w"))
    report = StageReport("concurrent")
    report.count("planned", last - first)
    report.count("inserted", result["inserted"])
    return report


if __name__ == "__main__":
    sys.exit(main())
