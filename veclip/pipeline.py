"""The chain: ingest -> dedupe -> caption -> rewrite -> gold, as one job with one MLflow run.

    spark-submit jobs/rewrite.py --config conf/local.yaml                  # the whole chain
    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite,gold

Each stage declares the tables it reads and writes; before Spark runs anything the plan is checked:
every table a selected stage reads must exist already or be written by an earlier selected stage.
Every stage skips finished work (keys already in its output table), so a rerun after a crash or a
kill completes only what is missing. Each stage holds the root's lock (`veclip.locking`) while it runs,
so two jobs on one root take turns stage by stage. The pipeline's MLflow run holds each stage's counts and
timings, the table versions, the model ids, the prompt file and an HTML gallery of samples.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from pyspark.sql import SparkSession

from veclip.config import Config
from veclip.locking import root_lock
from veclip.report import StageReport
from veclip.tables import Tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str                 # "module:function", imported only when the stage runs
    reads: tuple[str, ...]     # tables ("crawl" = the input files in ingest.inputs)
    writes: tuple[str, ...]
    gpu: bool = False

    def function(self) -> Callable[..., StageReport]:
        module, fn = self.entry.split(":")
        return getattr(importlib.import_module(module), fn)


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "veclip.ingest.stage:run_ingest", ("crawl",), ("bronze", "quarantine")),
    Stage("dedupe", "veclip.dedupe.stage:run_dedupe", ("bronze",), ("silver",)),
    Stage("caption", "veclip.caption.stage:run_caption", ("bronze",), ("captions",), gpu=True),
    Stage("rewrite", "veclip.rewrite.stage:run_rewrite", ("bronze", "captions"), ("vecap",), gpu=True),
    Stage("gold", "veclip.gold:run_gold", ("bronze", "captions"), ("gold",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def select(names: Optional[Sequence[str]]) -> list[Stage]:
    """Stages in pipeline order; unknown names are an error that lists the known ones."""
    if not names:
        return list(STAGES)
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGE_NAMES)}")
    return [s for s in STAGES if s.name in names]


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


def _available(cfg: Config, tables: Tables) -> Callable[[str], bool]:
    def available(table: str) -> bool:
        return bool(cfg.ingest.inputs) if table == "crawl" else tables.exists(table)
    return available


def run_pipeline(cfg: Config, spark: SparkSession, args) -> StageReport:
    stages = select(getattr(args, "stages", None))
    tables = Tables(cfg, spark)
    check_plan(stages, _available(cfg, tables))
    summary = StageReport("pipeline")
    for stage in stages:
        log.info("=== stage %s ===", stage.name)
        with root_lock(cfg, f"pipeline stage {stage.name}"):   # another job on this root waits, or fails clearly
            report = stage.function()(cfg, spark, args)
        if not report.seconds:
            report.finish()
        print(report.format(), flush=True)
        _merge_into(summary, report)
        from veclip import tracking
        tracking.log_report(report)
    summary.details["table versions"] = {t: tables.version(t) for t in
                                         ("bronze", "quarantine", "silver", "captions", "vecap", "gold")
                                         if tables.exists(t)}
    _log_run_extras(cfg, tables, summary)
    return summary.finish()


def _merge_into(summary: StageReport, report: StageReport) -> None:
    for k, v in report.counts.items():
        summary.count(f"{report.stage}.{k}", v)
    for label, left, right in report.identities:
        summary.identity(f"{report.stage}: {label}", [f"{report.stage}.{k}" for k in left],
                         [f"{report.stage}.{k}" for k in right])
    summary.details[f"{report.stage} seconds"] = round(report.seconds, 1)


def _log_run_extras(cfg: Config, tables: Tables, summary: StageReport) -> None:
    """Table versions, model ids, prompt file and the gallery on the pipeline's MLflow run."""
    import mlflow

    gallery = None
    if tables.exists("gold"):
        gallery = write_pipeline_gallery(cfg, tables)
        summary.details["gallery"] = gallery
    if mlflow.active_run() is None:
        return
    versions = summary.details.get("table versions", {})
    mlflow.log_params({f"table_version.{k}": v for k, v in versions.items()})
    mlflow.set_tags({"captioner": cfg.caption.captioner_id, "rewriter": cfg.rewrite.rewriter_id})
    prompt_file = getattr(cfg.rewrite, "prompt_file", None)
    if prompt_file and os.path.isfile(prompt_file):
        mlflow.log_artifact(prompt_file, "prompts")
    if gallery:
        mlflow.log_artifact(gallery, "gallery")


def write_pipeline_gallery(cfg: Config, tables: Tables, n: int = 24) -> str:
    from pyspark.sql import functions as F

    from veclip.gallery import write_gallery

    gold = tables.read("gold")
    if tables.exists("vecap"):
        flags = (tables.read("vecap").where(F.col("rewriter") == cfg.rewrite.rewriter_id)
                 .select("key", "fallback_used"))
        gold = gold.join(flags, "key", "left")
    rows = [r.asDict() for r in gold.orderBy(F.xxhash64("key")).limit(n).collect()]
    note = captioner_note(cfg)
    path = os.path.join(cfg.paths.root, "gallery", "index.html")
    return write_gallery(rows, path, title=f"VeCLIP samples — captioner {cfg.caption.captioner_id}, "
                                          f"rewriter {cfg.rewrite.rewriter_id}", note=note)


def captioner_note(cfg: Config) -> Optional[str]:
    """A warning for the gallery when the captioner is a tiny random-weight model."""
    marker = os.path.join(str(cfg.caption.model or ""), "VECLIP_RANDOM_WEIGHTS")
    if os.path.isfile(marker):
        return ("The captioner is a tiny model with random weights (the embedded default until a trained "
                "captioner is configured): its captions are meaningless, and so is what the rewriter "
                "takes from them. Set caption.model to a real VLM (e.g. llava-hf/llava-1.5-7b-hf).")
    return None
