"""Delta tables of the pipeline: where each lives, and the one upsert every stage uses.

    tables = Tables(cfg, spark)
    tables.merge("bronze", df, keys=["key"])                 # insert rows whose key is new
    tables.merge("captions", df, keys=["key", "captioner"], update=["caption", "error"])
    tables.delete("quarantine", keys_df, keys=["key", "stage"])  # rows matching keys_df go
    tables.read("silver").filter("is_canonical")
    tables.write_work_table("caption_x_todo", df, "slice", n)  # a run's scratch table under the root

Locally a table is a Delta directory `<paths.root>/<prefix><name>` that any Delta reader
(delta-rs, polars, DuckDB) can open; with `tables.schema` set it is a metastore table
`<catalog>.<schema>.<prefix><name>` (Unity Catalog on Databricks).

Several jobs on one root: each write is tagged (Delta commit `userMetadata`), and its MergeResult
(counts and version) is read from that commit, never from "the latest commit", which may be another
job's. A create or MERGE that loses a race to another writer is retried (`locking.retry_conflicts`);
locally the jobs also serialise on the root's lock (`locking.root_lock`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Optional, Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from veclip.config import Config
from veclip.locking import retry_conflicts

log = logging.getLogger(__name__)

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class MergeResult:
    table: str
    inserted: int
    updated: int
    version: int
    deleted: int = 0


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

    def _sql_name(self, name: str) -> str:
        """How Spark SQL names a table: its metastore name, or delta.`<directory>`."""
        return self.location(name) if self.by_name else f"delta.`{self.location(name)}`"

    def source(self, name: str) -> dict[str, str]:
        """A table as the keyword of a reader that takes a Delta path or a table name
        (`mlflow.data.load_delta`): {"table_name": name} (metastore) or {"path": directory}."""
        return {"table_name": self.location(name)} if self.by_name else {"path": self.location(name)}

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

    def properties(self, name: str) -> dict[str, str]:
        """The table properties (TBLPROPERTIES) of a table."""
        return {r["key"]: r["value"] for r in self.spark.sql(f"SHOW TBLPROPERTIES {self._sql_name(name)}").collect()}

    # -- write ---------------------------------------------------------------------------------
    def overwrite(self, name: str, df: DataFrame, options: Optional[dict[str, str]] = None) -> None:
        """Replace the rows and schema of table `name` with `df` (a new version; the old ones stay
        readable); `options`: Delta writer options, e.g. table properties to create it with."""
        writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        for key, value in (options or {}).items():
            writer = writer.option(key, value)
        writer.saveAsTable(self.location(name)) if self.by_name else writer.save(self.location(name))

    def set_properties(self, name: str, props: dict[str, str]) -> None:
        """Set table properties (ALTER TABLE ... SET TBLPROPERTIES) on an existing table."""
        body = ", ".join(f"'{k}' = '{v}'" for k, v in props.items())
        self.spark.sql(f"ALTER TABLE {self._sql_name(name)} SET TBLPROPERTIES ({body})")

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
        # A lost race (another job created the table or committed first) is retried: the MERGE is by
        # key, so the retry inserts only the rows the other job did not.
        return retry_conflicts(lambda: self._upsert(name, src, keys, update, partition_by), f"merge into '{name}'")

    def _upsert(self, name: str, src: DataFrame, keys: Sequence[str], update: Optional[Sequence[str]],
                partition_by: Sequence[str]) -> MergeResult:
        tag = _commit_tag(name)
        if not self.exists(name):
            writer = src.write.format("delta").mode("errorifexists").option("userMetadata", tag)
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            if self.by_name:
                writer.saveAsTable(self.location(name))
            else:
                writer.save(self.location(name))
            result = self._own_commit(name, tag, -1)
            log.info("created table %s with %d rows", name, result.inserted)
            return result
        before = self.version(name)
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        m = self._delta(name).alias("t").merge(src.alias("s"), cond)
        if update:
            m = m.whenMatchedUpdate(set={c: f"s.`{c}`" for c in update})
        with self._tagged(tag):
            m.whenNotMatchedInsertAll().execute()
        return self._own_commit(name, tag, before)

    @contextlib.contextmanager
    def _tagged(self, tag: str):
        """Commits made in the block carry `tag` as their userMetadata (the session's own value restored)."""
        previous = self.spark.conf.get(USER_METADATA, None)
        self.spark.conf.set(USER_METADATA, tag)
        try:
            yield
        finally:
            if previous is None:
                self.spark.conf.unset(USER_METADATA)
            else:
                self.spark.conf.set(USER_METADATA, previous)

    def _own_commit(self, name: str, tag: str, before: int) -> MergeResult:
        """Counts and version of the commit tagged `tag` (this write's), not of the table's latest commit.
        No such commit: the write changed nothing and Delta committed nothing (version `before`)."""
        from pyspark.sql import functions as F

        for limit in (100, None):   # the other jobs' commits since ours are few; else read all history
            history = self._delta(name).history(limit) if limit else self._delta(name).history()
            row = history.where(F.col("userMetadata") == tag).select("version", "operation", "operationMetrics").first()
            if row is not None:
                break
        if row is None:
            return MergeResult(name, 0, 0, before)
        metrics = row["operationMetrics"] or {}
        inserted = metrics.get("numOutputRows", 0) if row["operation"] != "MERGE" else \
            metrics.get("numTargetRowsInserted", 0)
        return MergeResult(name, int(inserted), int(metrics.get("numTargetRowsUpdated", 0)), int(row["version"]),
                           int(metrics.get("numTargetRowsDeleted", 0)))

    def delete(self, name: str, keys_df: DataFrame, keys: Sequence[str]) -> MergeResult:
        """Delete the rows of table `name` that match a row of `keys_df` on `keys` (a MERGE, so the
        keys may be a DataFrame of any size); safe to rerun. `deleted` says how many went."""
        if not self.exists(name):
            return MergeResult(name, 0, 0, -1)
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        src = keys_df.select(*keys).dropDuplicates(list(keys))

        def delete() -> MergeResult:
            tag, before = _commit_tag(name), self.version(name)
            with self._tagged(tag):
                self._delta(name).alias("t").merge(src.alias("s"), cond).whenMatchedDelete().execute()
            return self._own_commit(name, tag, before)

        return retry_conflicts(delete, f"delete from '{name}'")

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

    # -- work tables ---------------------------------------------------------------------------
    # A run's scratch Delta table (e.g. a model stage's to-do snapshot, veclip.model_stage): one
    # writer, read only by the run that wrote it, rewritten by the next run. Always a directory under
    # the root, also when the pipeline's tables live in a metastore: it is never registered.
    def work_location(self, name: str) -> str:
        """Directory of work table `name`: `<paths.root>/_work/<prefix><name>`."""
        return os.path.join(self.cfg.paths.root, "_work", f"{self.cfg.tables.prefix}{name}")

    def write_work_table(self, name: str, df: DataFrame, partition_by: str, partitions: int) -> None:
        """Replace work table `name` with `df`, one directory (and one file) per `partition_by` value.

        `df` is evaluated once. The rows are hash-partitioned on `partition_by` into `partitions` tasks
        first, so all rows of one value are written by one task into one file; a reader's
        `where(partition_by == v)` then opens that file only (partition pruning). A range partitioning
        would sample `df` in a pass of its own: a second evaluation of the query that made it.
        The old table is deleted first (an overwrite would keep its files until a VACUUM).
        """
        self.drop_work_table(name)
        (df.repartition(max(1, partitions), partition_by).write.format("delta").mode("overwrite")
         .option("optimizeWrite", "false")   # Databricks: keep one file per value, do not rebalance
         .partitionBy(partition_by).save(self.work_location(name)))

    def read_work_table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.work_location(name))

    def drop_work_table(self, name: str) -> None:
        """Delete work table `name`'s directory (nothing when there is none), on any Hadoop file system."""
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.work_location(name))
        fs = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        if fs.exists(path):
            fs.delete(path, True)


def _commit_tag(name: str) -> str:
    """A unique userMetadata for one write, by which its commit is found in the table's history."""
    return f"veclip:{name}:{os.getpid()}:{uuid.uuid4().hex}"


def canonical_samples(tables: Tables):
    """Bronze rows that dedupe kept (all bronze rows until a silver table exists)."""
    bronze = tables.read("bronze")
    if not tables.exists("silver"):
        log.warning("no silver table yet: using every bronze row as canonical")
        return bronze
    keep = tables.read("silver").where("is_canonical").select("key")
    return bronze.join(keep, on="key", how="inner")
