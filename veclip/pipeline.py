"""The chain: ingest -> dedupe -> caption -> rewrite -> gold, as one job with one MLflow run.

    spark-submit jobs/rewrite.py --config conf/local.yaml                  # the whole chain
    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite,gold
    report = run_pipeline(cfg, spark, stages=["rewrite", "gold"], retry_errors=True)   # from Python

Each stage declares the tables it reads and writes (`veclip.stages`); before Spark runs anything the
plan is checked: every table a selected stage reads must exist already or be written by an earlier
selected stage.
Every stage skips finished work (keys already in its output table), so a rerun after a crash or a
kill completes only what is missing. Each stage holds the root's lock (`veclip.locking`) while it runs,
so two jobs on one root take turns stage by stage. The pipeline's MLflow run holds each stage's counts and
timings, the table versions, the model ids, the prompt file and an HTML gallery of samples.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Optional, Sequence

from pyspark.sql import SparkSession

from veclip.config import Config
from veclip.report import StageReport
from veclip.rewrite.prompt import resolve_prompt_file
from veclip.stages import check_plan, run_reported, select
from veclip.tables import Tables

log = logging.getLogger(__name__)


def _available(cfg: Config, tables: Tables) -> Callable[[str], bool]:
    def available(table: str) -> bool:
        return bool(cfg.ingest.inputs) if table == "crawl" else tables.exists(table)
    return available


def run_pipeline(cfg: Config, spark: SparkSession, *, stages: Optional[Sequence[str]] = None,
                 retry_errors: bool = False, retry_quarantined: bool = False) -> StageReport:
    """Run the chain's `stages` (default: all, in order) after checking the plan; each stage gets the
    options it takes (`retry_errors`: caption and rewrite; `retry_quarantined`: ingest), holds the
    root's lock while it runs, and logs its report into the active MLflow run."""
    selected = select(stages)
    tables = Tables(cfg, spark)
    check_plan(selected, _available(cfg, tables))
    options = {"retry_errors": retry_errors, "retry_quarantined": retry_quarantined}
    summary = StageReport("pipeline")
    for stage in selected:
        log.info("=== stage %s ===", stage.name)
        # another job on this root waits, or fails clearly; the accounting is checked on the summary
        report = run_reported(stage, cfg, spark, holder=f"pipeline stage {stage.name}", check=False,
                              **stage.accepted(options))
        _merge_into(summary, report)
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
    with contextlib.suppress(FileNotFoundError):    # a run of ingest alone may name no usable prompt
        mlflow.log_artifact(resolve_prompt_file(cfg.rewrite.prompt_file), "prompts")
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
