"""The Spark session: reuse an active one (Databricks, spark-submit), else build a local one with Delta.

    spark = get_spark(cfg)

Locally the Delta jars are on pyspark's own classpath (scripts/setup.sh puts them there), so no
download happens at run time and the same code works under `spark-submit` and plain `python`.
On Databricks, Delta is built in: no jars or extensions are set there.
"""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from veclip.config import Config

log = logging.getLogger(__name__)


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def get_spark(cfg: Config) -> SparkSession:
    """Return the active session, or build `local[*]` with Delta, quiet logs and paths under the root."""
    active = SparkSession.getActiveSession()
    if active is not None or on_databricks():
        spark = active or SparkSession.builder.getOrCreate()
        log.info("using the existing Spark session (%s)", spark.sparkContext.master)
        return spark
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (with the pinned stack and veclip installed), not whatever
    # python3 is on PATH: they import veclip like any installed library.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = cfg.paths.root
    os.makedirs(root, exist_ok=True)
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(cfg.spark.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", os.path.join(root, "spark-warehouse"))
        .config("spark.jars.ivy", os.path.join(root, ".ivy2"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={os.path.join(root, 'derby')}")
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        # Delta rebuilds table state with 50 tasks by default: minutes of overhead on a laptop.
        .config("spark.databricks.delta.snapshotPartitions", str(cfg.spark.shuffle_partitions))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    log.info("started local Spark %s (%s), root %s", spark.version, cfg.spark.master, root)
    return spark
