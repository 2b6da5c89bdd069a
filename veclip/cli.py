"""What every `jobs/<stage>.py` shares: `--config`, repeatable `--set`, Spark, an MLflow run, a report.

    run_job("ingest", run_ingest)   # run_ingest(cfg, spark, args) -> StageReport

Exit codes: 0 done, 1 the stage's accounting did not add up, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

from veclip.config import ConfigError, load_config
from veclip.report import StageReport

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
            argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser(description or name, add_args).parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Imported here so that `--help` and config errors answer without starting a JVM.
    from veclip import tracking
    from veclip.spark import get_spark, on_databricks

    spark = get_spark(cfg)
    try:
        with tracking.job_run(cfg, name):
            report = stage(cfg, spark, args)
            report.finish() if not report.seconds else None
            print(report.format(), flush=True)
            tracking.log_report(report)
        broken = report.broken()
        if broken:
            print("error: accounting does not add up:\n  " + "\n  ".join(broken), file=sys.stderr)
            return 1
        return 0
    finally:
        if not on_databricks():
            spark.stop()
