"""The command line: `veclip <job> [--config F] [--set k=v ...] [-v] [job flags]`.

    veclip ingest --set paths.root=DIR --set ingest.inputs=SHARD --input more.tar
    veclip rewrite --stages rewrite,gold          # the main job: the whole chain, or a subset
    python -m veclip train --resume               # the same
    spark-submit jobs/caption.py --retry-errors   # jobs/<job>.py: main(["<job>", *sys.argv[1:]])

The jobs are `veclip.stages.JOBS`: ingest, dedupe, caption, rewrite (the chain, `veclip.pipeline`),
train, evaluate; each job's flags are made from its stage's options. Without `--config` the embedded
local profile applies. A job loads the config, starts Spark and runs its stage through
`veclip.stages.run_reported` (the root's lock, an MLflow run, the report printed and logged).

Exit codes: 0 done, 1 the stage's accounting did not add up or a model stage hit its failure-rate
ceiling (`<stage>.max_failure_rate`), 2 bad config or arguments, 3 another job held the root's lock
longer than `VECLIP_LOCK_WAIT_S` (`veclip.locking`; without it a job waits its turn).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from veclip.config import ConfigError, load_config
from veclip.report import FailureRateExceeded
from veclip.stages import JOBS, Option, Stage



def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML profile (default: the embedded local profile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set paths.root=/tmp/run (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _items(option: Option):
    """argparse `type` of a flag whose one value holds several items (`--stages a,b`)."""
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(option.split) if x.strip())
        unknown = [x for x in items if option.choices and x not in option.choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(option.choices)}")
        return items
    return parse


def _add_option(p: argparse.ArgumentParser, option: Option) -> None:
    if option.type is bool:
        p.add_argument(option.cli_flag, dest=option.name, action="store_true", help=option.help)
    elif option.split:
        p.add_argument(option.cli_flag, dest=option.name, type=_items(option), default=option.default,
                       metavar=option.metavar, help=option.help)
    else:   # a repeatable flag
        p.add_argument(option.cli_flag, dest=option.name, action="append", default=None,
                       metavar=option.metavar, help=option.help)


def add_stage_arguments(p: argparse.ArgumentParser, stage: Stage) -> None:
    """`--config`, `--set`, `-v` and the stage's own flags."""
    _add_common(p)
    for option in stage.options:
        _add_option(p, option)


def build_parser() -> argparse.ArgumentParser:
    """`veclip <job> ...`, one sub-command per job in `veclip.stages.JOBS`."""
    p = argparse.ArgumentParser(prog="veclip", description="VeCLIP on Spark: run one job on the configured root.",
                                epilog=__doc__.split("\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = p.add_subparsers(dest="job", required=True, metavar="<job>", title="jobs")
    for name, stage in JOBS.items():
        add_stage_arguments(jobs.add_parser(name, help=stage.help, description=f"veclip {name}: {stage.help}"), stage)
    return p


def options_of(stage: Stage, ns: argparse.Namespace) -> dict:
    """The stage's keyword options from parsed flags (a repeatable flag given never: its default)."""
    out = {}
    for option in stage.options:
        value = getattr(ns, option.name)
        out[option.name] = option.default if value is None else tuple(value) if option.type is tuple else value
    return out


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "urllib3", "alembic", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`veclip <job> ...` (argv: without the program name; default sys.argv[1:]); returns the exit code."""
    ns = build_parser().parse_args(argv)
    stage = JOBS[ns.job]
    return run_job(ns.job, stage, ns.config, ns.set, ns.verbose, **options_of(stage, ns))


def run_job(job: str, stage: Stage, config: Optional[str] = None, sets: Sequence[str] = (), verbose: bool = False,
            **options) -> int:
    """Load the config, start Spark, run `stage` as job `job` (`veclip.stages.run_reported`); the exit code."""
    setup_logging(verbose)
    try:
        cfg = load_config(config, sets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Imported here so that `--help` and config errors answer without starting a JVM.
    from veclip.locking import RootLocked
    from veclip.spark import get_spark, on_databricks
    from veclip.stages import AccountingError, run_reported

    spark = get_spark(cfg)
    try:
        run_reported(stage, cfg, spark, job=job, **options)   # an exception marks the MLflow run FAILED
        return 0
    except RootLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except FailureRateExceeded as e:
        if e.report is not None:
            print(e.report.format(), flush=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except AccountingError as e:
        print("error: accounting does not add up:\n  " + "\n  ".join(e.broken), file=sys.stderr)
        return 1
    finally:
        if not on_databricks():
            spark.stop()
