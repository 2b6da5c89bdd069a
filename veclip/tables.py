"""Delta tables of the pipeline: where each lives, and the one upsert every stage uses.

    tables = Tables(cfg, spark)
    tables.merge("bronze", df, keys=["key"])                 # insert rows whose key is new
    tables.merge("captions", df, keys=["key", "captioner"], update=["caption", "error"])
    tables.read("silver").filter("is_canonical")

Locally a table is a Delta directory `<paths.root>/<prefix><name>` that any Delta reader
(delta-rs, polars, DuckDB) can open; with `tables.schema` set it is a metastore table
`<catalog>.<schema>.<prefix><name>` (Unity Catalog on Databricks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from veclip.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    table: str
    inserted: int
    updated: int
    version: int


class Tables:
    def __init__(self, cfg: Config, spark: SparkSession):
        self.cfg = cfg
        self.spark = spark

    # -- where ---------------------------------------------------------------------------------
    @property
    def by_name(self) -> bool:
        return self.cfg.tables.schema_ is not None

    def location(self, name: str) -> str:
        """Directory (local) or three-level name (metastore) of a table."""
        t = self.cfg.tables
        full = f"{t.prefix}{name}"
        if self.by_name:
            return ".".join(p for p in (t.catalog, t.schema_, full) if p)
        return os.path.join(self.cfg.paths.root, full)

    def _delta(self, name: str) -> DeltaTable:
        loc = self.location(name)
        return DeltaTable.forName(self.spark, loc) if self.by_name else DeltaTable.forPath(self.spark, loc)

    # -- read ----------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        loc = self.location(name)
        if self.by_name:
            return self.spark.catalog.tableExists(loc)
        return DeltaTable.isDeltaTable(self.spark, loc)

    def read(self, name: str, version: Optional[int] = None) -> DataFrame:
        if not self.exists(name):
            raise FileNotFoundError(f"table '{name}' does not exist at {self.location(name)}: "
                                    "run the stage that writes it first")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(self.location(name)) if self.by_name else reader.load(self.location(name))

    def version(self, name: str) -> int:
        return int(self._delta(name).history(1).select("version").first()[0])

    def files(self, name: str, version: Optional[int] = None) -> list[str]:
        """The Parquet files that make up a version of a table (for readers that stream files)."""
        return sorted(self.read(name, version).inputFiles())

    # -- write ---------------------------------------------------------------------------------
    def merge(self, name: str, df: DataFrame, keys: Sequence[str],
              update: Optional[Sequence[str]] = None, partition_by: Sequence[str] = ()) -> MergeResult:
        """Upsert `df` into table `name` on `keys`; safe to rerun.

        New keys are inserted whole. Existing keys are left alone unless `update` names the columns
        to overwrite (a stage sets only its own columns). The source is reduced to one row per key
        first: Delta refuses a MERGE where several source rows match one target row.
        """
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise ValueError(f"merge into '{name}': key column(s) {missing} not in {df.columns}")
        src = df.dropDuplicates(list(keys))
        if not self.exists(name):
            writer = src.write.format("delta").mode("errorifexists")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            if self.by_name:
                writer.saveAsTable(self.location(name))
            else:
                writer.save(self.location(name))
            n = self.read(name).count()
            log.info("created table %s with %d rows", name, n)
            return MergeResult(name, n, 0, self.version(name))
        before = self.version(name)
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        m = self._delta(name).alias("t").merge(src.alias("s"), cond)
        if update:
            m = m.whenMatchedUpdate(set={c: f"s.`{c}`" for c in update})
        m.whenNotMatchedInsertAll().execute()
        return self._last_merge(name, before)

    def _last_merge(self, name: str, before: int) -> MergeResult:
        row = self._delta(name).history(1).select("version", "operationMetrics").first()
        if int(row["version"]) == before:  # nothing changed: Delta wrote no commit
            return MergeResult(name, 0, 0, before)
        metrics = row["operationMetrics"] or {}
        return MergeResult(name, int(metrics.get("numTargetRowsInserted", 0)),
                           int(metrics.get("numTargetRowsUpdated", 0)), int(row["version"]))

    def missing(self, source: DataFrame, name: str, keys: Sequence[str], where: Optional[str] = None) -> DataFrame:
        """Rows of `source` with no row in table `name` on `keys` (optionally among rows matching `where`).

        This is how every stage finds the work left to do: rerunning after a crash redoes nothing.
        """
        if not self.exists(name):
            return source
        done = self.read(name)
        if where:
            done = done.where(where)
        return source.join(done.select(*keys).distinct(), on=list(keys), how="left_anti")


def canonical_samples(tables: Tables):
    """Bronze rows that dedupe kept (all bronze rows until a silver table exists)."""
    bronze = tables.read("bronze")
    if not tables.exists("silver"):
        log.warning("no silver table yet: using every bronze row as canonical")
        return bronze
    keep = tables.read("silver").where("is_canonical").select("key")
    return bronze.join(keep, on="key", how="inner")
