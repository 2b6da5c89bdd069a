"""What the Databricks notebooks in notebooks/ share: config from widgets, running a stage, sample views.

The notebooks stay thin drivers of this library:

    cfg = notebook.widget_config(dbutils, "conf/databricks.yaml")
    report = notebook.run_stage("ingest", cfg, spark)
    displayHTML(notebook.samples_html(cfg, spark, n=24))

Locally, tests/test_notebooks.py runs every notebook top to bottom with a small stand-in for
`dbutils.widgets`, `display` and `displayHTML`.
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from veclip.config import Config, load_config
from veclip.files import REPO_ROOT
from veclip.report import StageReport
from veclip.tables import Tables



def widget_config(dbutils: Any, default_profile: str) -> Config:
    """Declare the `config` and `overrides` widgets and load the config they name.

    `overrides` holds `dotted.key=value` items, one per line or separated by `;`. A relative profile
    path is read from the repository root, wherever the notebook runs from.
    """
    dbutils.widgets.text("config", default_profile, "Config profile")
    dbutils.widgets.text("overrides", "", "Overrides (key=value; ...)")
    profile = dbutils.widgets.get("config")
    if not os.path.isabs(profile):
        profile = str(REPO_ROOT / profile)
    raw = dbutils.widgets.get("overrides").replace("\n", ";")
    return load_config(profile, [item.strip() for item in raw.split(";") if item.strip()])


def run_stage(name: str, cfg: Config, spark: SparkSession, **options: Any) -> StageReport:
    """Run one stage (`veclip.stages`: the function its job calls, with the same keyword options, e.g.
    `retry_errors=True`) and print its accounting, through `veclip.stages.run_reported`.

    Like a job, the stage holds the root's lock while it runs (`veclip.locking`) and gets its own MLflow
    run (`tracking.job_run`; nested when one is already active) with the report's counts logged to it.
    A report whose accounting does not add up raises `veclip.stages.AccountingError` (a RuntimeError),
    after printing it.
    """
    from veclip.stages import get, run_reported

    return run_reported(get(name), cfg, spark, job=name, holder=f"notebook stage {name}", **options)


def quarantine_reasons(cfg: Config, spark: SparkSession) -> DataFrame:
    """Quarantined samples per stage and reason, most frequent first."""
    return (Tables(cfg, spark).read("quarantine").groupBy("stage", "reason").count()
            .orderBy(F.desc("count")))


def generation_rates(cfg: Config, spark: SparkSession) -> DataFrame:
    """Error rate of the captioner and error/fallback rates of the rewriter, as one small table."""
    t = Tables(cfg, spark)
    caps = (t.read("captions").where(F.col("captioner") == cfg.caption.captioner_id)
            .agg(F.count("*").alias("rows"), F.avg(F.col("error").isNotNull().cast("double")).alias("error_rate"))
            .withColumn("stage", F.lit("caption")).withColumn("fallback_rate", F.lit(None).cast("double")))
    vec = (t.read("vecap").where(F.col("rewriter") == cfg.rewrite.rewriter_id)
           .agg(F.count("*").alias("rows"), F.avg(F.col("error").isNotNull().cast("double")).alias("error_rate"),
                F.avg(F.col("fallback_used").cast("double")).alias("fallback_rate"))
           .withColumn("stage", F.lit("rewrite")))
    cols = ["stage", "rows", "error_rate", "fallback_rate"]
    return caps.select(*cols).unionByName(vec.select(*cols))


def samples_html(cfg: Config, spark: SparkSession, n: int = 24) -> str:
    """Thumbnails beside AltText, caption and VeCap, from the gold table (the pipeline's gallery)."""
    from veclip.pipeline import write_pipeline_gallery

    with open(write_pipeline_gallery(cfg, Tables(cfg, spark), n=n), encoding="utf-8") as f:
        return f.read()
