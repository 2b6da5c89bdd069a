"""What every `jobs/<stage>.py` shares: `--config`, repeatable `--set`, Spark, an MLflow run, a report.

    run_job("ingest", run_ingest)   # run_ingest(cfg, spark, args) -> StageReport

Exit codes: 0 done, 1 the stage's accounting did not add up or a model stage hit its failure-rate
ceiling (`<stage>.max_failure_rate`), 2 bad config or arguments, 3 another job held the root's lock
longer than `VECLIP_LOCK_WAIT_S` (`veclip.locking`; without it a job waits its turn).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Callable, Optional, Sequence

from veclip.config import ConfigError, load_config
from veclip.report import FailureRateExceeded, StageReport

log = logging.getLogger("veclip")

StageFn = Callable[..., StageReport]


def build_parser(description: str, add_args: Optional[Callable[[argparse.ArgumentParser], None]] = None):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/local.yaml", help="YAML profile (default: conf/local.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set paths.root=/tmp/run (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if add_args:
        add_args(p)
    return p


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "urllib3", "alembic", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_job(name: str, stage: StageFn, description: str = "",
            add_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
            argv: Optional[Sequence[str]] = None, lock: bool = True) -> int:
    """Parse, load the config, run `stage` holding the root's lock (`lock=False`: the stage takes it
    itself, as the pipeline does per stage), print and log its report; returns the exit code."""
    args = build_parser(description or name, add_args).parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Imported here so that `--help` and config errors answer without starting a JVM.
    from veclip import tracking
    from veclip.locking import RootLocked, root_lock
    from veclip.spark import get_spark, on_databricks

    spark = get_spark(cfg)
    try:
        try:
            if not lock and cfg.mlflow.enabled:
                with root_lock(cfg, name):   # MLflow's first use on a root (database, experiment) takes turns too
                    tracking.configure(cfg)
            # The lock first: a job that waits for another has started nothing, not even its MLflow run.
            with root_lock(cfg, name) if lock else contextlib.nullcontext(), tracking.job_run(cfg, name):
                report = stage(cfg, spark, args)     # an exception marks the MLflow run FAILED
                report.finish() if not report.seconds else None
                print(report.format(), flush=True)
                tracking.log_report(report)
        except RootLocked as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        except FailureRateExceeded as e:
            if e.report is not None:
                print(e.report.format(), flush=True)
            print(f"error: {e}", file=sys.stderr)
            return 1
        broken = report.broken()
        if broken:
            print("error: accounting does not add up:\n  " + "\n  ".join(broken), file=sys.stderr)
            return 1
        return 0
    finally:
        if not on_databricks():
            spark.stop()
