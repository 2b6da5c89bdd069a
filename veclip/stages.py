"""The stages, in one registry, and the one way to run a stage and report it.

    from veclip.stages import get, run_reported
    report = run_reported(get("caption"), cfg, spark, job="caption", retry_errors=True)
    run_caption(cfg, spark, retry_errors=True)           # the bare stage function, no lock, no report

Each `Stage` names its function ("module:function", imported only when it runs, so `veclip --help`
starts neither a JVM nor torch), the tables it reads and writes, whether it belongs to the data chain
(ingest -> dedupe -> caption -> rewrite -> gold, `veclip.pipeline`) or is a model stage (train,
evaluate), and its typed keyword options, from which `veclip.cli` makes the command-line flags.
Table names are those of `veclip.tables` ("crawl" = the input files in `ingest.inputs`):
- `reads`: must exist before the stage runs, or be written by an earlier stage of the same plan;
- `reads_if_present`: read when they exist (its own output for skipping finished work, silver for
  the canonical rows once dedupe has run, ...);
- `writes`: every table the stage may change (tests/test_stages.py checks all three on a real run).

`run_reported` is what jobs (`veclip.cli`), the pipeline's stages, the notebooks
(`veclip.notebook.run_stage`) and the demo share: the root's lock (`veclip.locking`), an MLflow run
(`tracking.job_run`, nested when one is active) or the active run, the finished report printed and
logged (`tracking.log_report`), then the accounting check.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from veclip.report import StageReport

DATA, MODEL, CHAIN = "data", "model", "chain"   # Stage.kind


@dataclass(frozen=True)
class Option:
    """A keyword option of a stage function, and the command-line flag it is set by.

    `type` is `bool` (a switch, `--retry-errors`) or `tuple` (strings: a repeatable flag such as
    `--input A --input B`, or with `split` one flag of separated items such as `--stages a,b`).
    """
    name: str                       # the stage function's keyword
    type: type
    default: Any
    help: str
    flag: Optional[str] = None      # default: --<name with dashes>
    metavar: Optional[str] = None
    split: Optional[str] = None     # tuple options: one flag, items separated by this
    choices: tuple[str, ...] = ()   # tuple options: the allowed items (empty: any)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str                             # "module:function", imported only when the stage runs
    help: str                              # one line, for `veclip --help`
    kind: str                              # DATA (the chain's stages), MODEL, or CHAIN (the chain itself)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    reads_if_present: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()

    def function(self) -> Callable[..., StageReport]:
        module, fn = self.entry.split(":")
        return getattr(importlib.import_module(module), fn)

    def accepted(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The items of `options` that this stage takes (the pipeline passes each stage only those)."""
        names = {o.name for o in self.options}
        return {k: v for k, v in options.items() if k in names}


RETRY_ERRORS = "retry_errors"
RETRY_QUARANTINED = Option("retry_quarantined", bool, False,
                           "try again the samples quarantined for a transient reason (timeout, DNS, 5xx/429, "
                           "truncated, damaged file); same as --set ingest.retry_quarantined=true")

STAGES: tuple[Stage, ...] = (
    Stage("ingest", "veclip.ingest.stage:run_ingest", "crawl files -> bronze + quarantine", DATA,
          reads=("crawl",), writes=("bronze", "quarantine", "ingest_files"),
          reads_if_present=("bronze", "quarantine", "ingest_files"),
          options=(Option("inputs", tuple, (), "an input file, glob or folder, added to ingest.inputs (repeatable)",
                          flag="--input", metavar="PATH"),
                   RETRY_QUARANTINED)),
    Stage("dedupe", "veclip.dedupe.stage:run_dedupe", "bronze -> silver + dedupe_audit", DATA,
          reads=("bronze",), writes=("silver", "dedupe_audit", "quarantine"), reads_if_present=("silver",)),
    Stage("caption", "veclip.caption.stage:run_caption", "canonical images -> captions (the VLM)", DATA,
          reads=("bronze",), writes=("captions",), reads_if_present=("silver", "captions"),
          options=(Option(RETRY_ERRORS, bool, False,
                          "also recaption rows whose earlier caption failed (their error row is overwritten)"),)),
    Stage("rewrite", "veclip.rewrite.stage:run_rewrite", "AltText + caption -> vecap (the LLM)", DATA,
          reads=("bronze", "captions"), writes=("vecap",), reads_if_present=("silver", "vecap"),
          options=(Option(RETRY_ERRORS, bool, False, "also rewrite rows whose earlier rewrite failed"),)),
    Stage("gold", "veclip.gold:run_gold", "canonical rows + caption + VeCap -> gold", DATA,
          reads=("bronze", "captions"), writes=("gold", "quarantine"), reads_if_present=("silver", "vecap", "gold")),
    Stage("train", "veclip.train.stage:run_train", "train CLIP on gold, register the model", MODEL,
          reads=("gold",),
          options=(Option("resume", bool, False,
                          "continue the run named by train.run_name (default: the latest run) from its "
                          "latest checkpoint, on the same gold version and with the same data order"),)),
    Stage("evaluate", "veclip.evaluate.stage:run_evaluate", "retrieval + zero-shot benchmarks of a CLIP model",
          MODEL, options=(Option("promote", bool, False,
                                 "move the alias `champion` to this version if eval.promote_metric beats it"),)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
CHAIN_STAGES = tuple(s for s in STAGES if s.kind == DATA)
CHAIN_NAMES = tuple(s.name for s in CHAIN_STAGES)

PIPELINE = Stage(
    "pipeline", "veclip.pipeline:run_pipeline", "the main job: the chain ingest -> gold (--stages: a subset), one MLflow run", CHAIN,
    reads=("crawl",), writes=tuple(dict.fromkeys(t for s in CHAIN_STAGES for t in s.writes)),
    options=(Option("stages", tuple, None, f"comma-separated subset of {','.join(CHAIN_NAMES)} "
                                           "(default: all, in order)", metavar="A,B", split=",", choices=CHAIN_NAMES),
             Option(RETRY_ERRORS, bool, False, "caption and rewrite again the rows that failed before"),
             RETRY_QUARANTINED))

# `veclip <job>` and jobs/<job>.py: the chain's stages that run alone, the chain (the main job,
# jobs/rewrite.py), the model stages.
JOBS: dict[str, Stage] = {"ingest": STAGES[0], "dedupe": STAGES[1], "caption": STAGES[2], "rewrite": PIPELINE,
                          "train": STAGES[5], "evaluate": STAGES[6]}


def get(name: str) -> Stage:
    """The stage called `name`; an unknown name is an error that lists the known ones."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage '{name}'; choose from {', '.join(STAGE_NAMES)}")


def select(names: Optional[Sequence[str]]) -> list[Stage]:
    """The chain's stages in pipeline order (all when `names` is empty); unknown names are an error
    that lists the known ones."""
    if not names:
        return list(CHAIN_STAGES)
    unknown = [n for n in names if n not in CHAIN_NAMES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(CHAIN_NAMES)}")
    return [s for s in CHAIN_STAGES if s.name in names]


def check_plan(stages: Sequence[Stage], available: Callable[[str], bool]) -> None:
    """Raise if a stage would read a table that neither exists nor is written before it."""
    produced: set[str] = set()
    problems = []
    for stage in stages:
        for table in stage.reads:
            if table not in produced and not available(table):
                problems.append(f"stage '{stage.name}' reads '{table}', which does not exist and no earlier "
                                f"selected stage writes it")
        produced.update(stage.writes)
    if problems:
        raise ValueError("pipeline plan is incomplete:\n  " + "\n  ".join(problems))


class AccountingError(RuntimeError):
    """A stage's report does not add up. `report`: the report; `broken`: its failed identities."""

    def __init__(self, report: StageReport):
        self.report, self.broken = report, report.broken()
        super().__init__(f"stage {report.stage}: accounting does not add up: {self.broken}")


def run_reported(stage: Stage, cfg, spark, *, job: Optional[str] = None, holder: Optional[str] = None,
                 check: bool = True, **options: Any) -> StageReport:
    """Run `stage` with its keyword `options`, print and log its report, check its accounting.

    - the root's lock (`veclip.locking.root_lock`, naming `holder`, default `job` or the stage's name)
      is held while it runs; the chain (kind CHAIN) takes it per stage itself, so for it only MLflow's
      first use on the root (database, experiment) holds the lock;
    - `job`: the name of the MLflow run opened for it (`tracking.job_run`: nested when a run is active,
      nothing when tracking is off); None: its report is logged into the active run, if any;
    - the lock is taken before the run starts: a job that waits for another has started nothing;
    - an exception ends the MLflow run as FAILED and propagates;
    - with `check`, a report whose accounting does not add up raises `AccountingError` once it has
      been printed and logged (the MLflow run ends FINISHED).
    """
    from veclip import tracking
    from veclip.locking import root_lock

    holder = holder or job or stage.name
    locks = stage.kind != CHAIN
    if not locks and job is not None and cfg.mlflow.enabled:
        with root_lock(cfg, holder):
            tracking.configure(cfg)
    with root_lock(cfg, holder) if locks else contextlib.nullcontext(), \
            tracking.job_run(cfg, job) if job is not None else contextlib.nullcontext():
        report = stage.function()(cfg, spark, **options)
        if not report.seconds:
            report.finish()
        print(report.format(), flush=True)
        tracking.log_report(report)
    if check and report.broken():
        raise AccountingError(report)
    return report
