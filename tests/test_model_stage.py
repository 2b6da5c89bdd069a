"""veclip.model_stage, the driver of the caption and rewrite stages, in real Spark + Delta:

- the to-do query is evaluated once per run however many slices there are, the snapshot holds each
  to-do row once, and reading a slice opens that slice's file only (the Scan's `numFiles` metric);
- a storm of failing rows stops the run after its last slice, every row committed as an error row;
- the caption stage (tiny random-weight LLaVA, on the hf and on the vLLM engine) killed mid-run, its
  second slice's worker interrupted, then rerun: exactly one caption per key, the first run's slices
  not redone, the counts add up;
- the rewrite stage's to-do rows carry silver's `alt_text_low_info` (False without a silver table).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from tests import test_caption as caption_fixture
from veclip import model_stage as ms
from veclip.report import FailureRateExceeded, StageReport
from veclip.tables import Tables

TARGET = StructType([StructField("key", StringType(), False), StructField("value", StringType(), True),
                     StructField("error", StringType(), True)])


def files_read(df) -> int:
    """Run `df` and return how many files its Scan opened (Spark's `numFiles` metric)."""
    df.collect()
    leaves = df._jdf.queryExecution().executedPlan().collectLeaves().iterator()
    total = 0
    while leaves.hasNext():
        metrics = leaves.next().metrics()
        if metrics.contains("numFiles"):
            total += int(metrics.apply("numFiles").value())
    return total


def counted_todo(spark, n: int):
    """A to-do DataFrame of n keys whose every evaluation is counted: (df, accumulator of rows evaluated)."""
    evaluated = spark.sparkContext.accumulator(0)

    def seen(key):
        evaluated.add(1)
        return key

    keys = F.udf(seen, "string")(F.format_string("k%05d", F.col("id")))
    return spark.range(n).select(keys.alias("key"), (F.col("id") % 10).alias("n")), evaluated


def echo_stage(spark, fail_every: int = 0) -> ms.ModelStage:
    """A stand-in model: value = "v<n>"; with `fail_every`, every such row (by n) is an error row."""
    def generate(rows, expected):
        failed = (F.col("n") % fail_every == 0) if fail_every else F.lit(False)
        out = rows.select("key", F.when(~failed, F.concat(F.lit("v"), F.col("n").cast("string"))).alias("value"),
                          F.when(failed, F.lit("ValueError: bad row")).alias("error"))
        return out.withColumn(ms.OUTCOME, ms.outcome_of(F.lit("done")))

    return ms.ModelStage("echo", "echo", ["key"], ["value", "error"], ("done", "failed"), generate)


def test_the_todo_query_runs_once_and_each_slice_reads_only_its_own_file(spark, make_cfg):
    tables = Tables(make_cfg(), spark)
    tables.merge("echo", spark.createDataFrame([], TARGET), ["key"])
    todo, evaluated = counted_todo(spark, 500)
    snap = ms.snapshot_todo(tables, todo, ms.work_name("echo", "model/v1"), rows=500, commit_every=100)
    assert (snap.n_slices, evaluated.value) == (5, 500)   # written once, whatever the slicing

    work = tables.read_work_table(snap.name)
    assert tables.work_location(snap.name).endswith("/_work/echo_model_v1_todo")
    per_slice = {r["slice"]: r["n"] for r in work.groupBy("slice").agg(F.count("*").alias("n")).collect()}
    assert work.count() == work.select("key").distinct().count() == 500 and set(per_slice) == set(range(5))
    assert work.where(F.col("slice") != ms.slice_of(5)).count() == 0   # each row in its key's slice
    assert len(work.inputFiles()) == 5
    for i in range(5):
        rows = ms.read_slice(tables, snap, i)
        assert files_read(rows) == 1 and rows.count() == per_slice[i] and "slice" not in rows.columns

    report = StageReport("echo")
    outcome = ms.run_slices(spark, tables, snap, echo_stage(spark, fail_every=5), report, max_failure_rate=0.5)
    assert evaluated.value == 500   # the slices read the snapshot, never the to-do query again
    assert report.counts == {"done": 400, "failed": 100} and outcome == {"done": 400, "failed:ValueError": 100}
    out = tables.read("echo").toPandas()
    assert len(out) == out["key"].nunique() == 500 and out["error"].notna().sum() == 100
    assert not DeltaTable.isDeltaTable(spark, tables.work_location(snap.name))   # removed after success


def test_a_failure_storm_stops_after_the_last_slice_with_every_row_committed(spark, make_cfg):
    tables = Tables(make_cfg(), spark)
    tables.merge("echo", spark.createDataFrame([], TARGET), ["key"])
    todo, _ = counted_todo(spark, 60)
    snap = ms.snapshot_todo(tables, todo, "echo_todo", rows=60, commit_every=20)
    report = StageReport("echo")
    # Fewer than FAILURE_CHECK_MIN_ROWS rows: only the check after the last slice may stop the run.
    with pytest.raises(FailureRateExceeded, match=r"echo: 60 of the 60 rows of this run failed \(100%\).*"
                                                  r"errors: ValueError x60"):
        ms.run_slices(spark, tables, snap, echo_stage(spark, fail_every=1), report, max_failure_rate=0.5)
    assert report.counts == {"done": 0, "failed": 60}
    assert tables.read("echo").where("error IS NOT NULL").count() == 60


class Interrupted(BaseException):
    """What Ctrl-C or a dying worker does to a task: not an Exception, so no row absorbs it."""


@dataclass(frozen=True)
class InterruptedLoader:
    """The real captioner, except that the batch holding `stop_at` raises Interrupted."""

    inner: object
    stop_at: str

    @property
    def cache_key(self) -> str:
        return self.inner.cache_key + ":interrupted"

    def __call__(self, device: str):
        predict = self.inner(device)

        def interrupted(batch: pd.DataFrame):
            if self.stop_at in set(batch["key"]):
                raise Interrupted("killed mid-slice")
            return predict(batch)

        return interrupted


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def test_caption_killed_mid_run_resumes_with_exactly_one_caption_per_key(spark, make_cfg, cc12m_shard, tmp_path, engine):
    from veclip.caption.stage import caption_loader, run_caption
    from veclip.caption.tiny import build_tiny_llava

    # vLLM's CPU attention needs head_dim 64: the "vllm" size of the same tiny LLaVA.
    llava = build_tiny_llava(str(tmp_path / "tiny-llava"), size="vllm" if engine == "vllm" else "tiny")
    cfg = make_cfg("mlflow.enabled=false", f"caption.model={llava}", "caption.max_new_tokens=4",
                   "caption.batch_size=2", "caption.commit_every=2", "caption.max_failure_rate=1",
                   f"caption.engine={engine}")
    tables = Tables(cfg, spark)
    keys = caption_fixture.write_bronze(spark, tables, cc12m_shard, n_real=5)   # 7 rows: 4 slices of about 2
    slices = {r["key"]: r["s"] for r in tables.read("bronze").select("key", ms.slice_of(4).alias("s")).collect()}
    stop_at = max(slices, key=lambda k: (slices[k], k))         # a row of the last slice that has rows
    assert min(slices.values()) < slices[stop_at], "the fixture's keys must span more than one slice"

    with pytest.raises(Exception, match="killed mid-slice"):
        run_caption(cfg, spark, retry_errors=False,
                    loader=InterruptedLoader(caption_loader(cfg.caption)[0], stop_at))
    partial = tables.read("captions").toPandas()
    assert set(partial["key"]) == {k for k, s in slices.items() if s < slices[stop_at]}  # the slices before it

    report = run_caption(cfg, spark, retry_errors=False)
    assert report.broken() == []
    assert (report.counts["already_done"], report.counts["to_caption"]) == (len(partial), 7 - len(partial))
    assert (report.counts["captioned"], report.counts["failed"], report.counts["caption_rows"]) == \
        (5 - partial["error"].isna().sum(), 2 - partial["error"].notna().sum(), 7)
    rows = tables.read("captions").toPandas()
    assert sorted(rows["key"]) == sorted(keys.values()) and not rows.duplicated(["key", "captioner"]).any()
    before = partial.set_index("key")["finished_at"]
    assert (rows.set_index("key").loc[before.index, "finished_at"] == before).all()   # not redone
    assert report.details["slices"] == math.ceil((7 - len(partial)) / 2)   # the rerun slices only what is left


def test_rewrite_todo_rows_carry_silver_low_info_flag(spark, make_cfg):
    from tests.bronze_fixture import bronze_frame, bronze_row
    from veclip import schemas
    from veclip.rewrite.stage import ensure_table, work

    tables = Tables(make_cfg(), spark)
    rows = [bronze_row(b"not an image", f"alt {i}", "lowinfo.tar", str(i), size=(8, 8)) for i in range(3)]
    tables.merge("bronze", bronze_frame(spark, rows), ["key"])
    now = dt.datetime(2026, 1, 1)
    tables.merge("captions", spark.createDataFrame(
        [(r["key"], "cap", f"caption {i}", "m", None, "p", "h", "{}", None, now, now) for i, r in enumerate(rows)],
        schemas.CAPTIONS), ["key", "captioner"])
    ensure_table(spark, tables)

    todo, counts = work(tables, "cap", "rw", retry_errors=False)
    assert counts["to_rewrite"] == 3 and todo.columns == ["key", "alt_text", "caption", "alt_text_low_info"]
    assert {r["alt_text_low_info"] for r in todo.collect()} == {False}          # no silver table yet

    silver = [(r["key"], r["key"], True, None, None, r["image_sha256"], None, None, 8, 8, r["alt_text"], i == 1,
               None, now) for i, r in enumerate(rows)]
    tables.merge("silver", spark.createDataFrame(silver, schemas.SILVER), ["key"])
    todo, _ = work(tables, "cap", "rw", retry_errors=False)
    flags = {r["key"]: r["alt_text_low_info"] for r in todo.collect()}
    assert flags == {r["key"]: i == 1 for i, r in enumerate(rows)}


class _Master:
    """A stand-in for the session's SparkContext view that `plan_tasks` reads: master, parallelism, conf."""

    def __init__(self, master, parallelism=2, conf=None):
        from pyspark import SparkConf

        self.master, self.defaultParallelism = master, parallelism
        self._conf = SparkConf(loadDefaults=False).setAll(list((conf or {}).items()))

    def getConf(self):
        return self._conf


@pytest.mark.parametrize("master, cores", [("local[2]", 2), ("local[4,3]", 4), ("local", 1)])
def test_a_whole_executor_task_on_cpu_owns_all_its_cores(master, cores, monkeypatch):
    from types import SimpleNamespace

    from veclip import model_stage as ms

    monkeypatch.setattr(ms, "task_device", lambda: "cpu")
    session = SimpleNamespace(sparkContext=_Master(master))
    assert ms.executor_layout(session) == (1, cores)
    # One engine, every core of the local executor; hf keeps a task per batch up to the parallelism.
    assert ms.plan_tasks(session, 2000, 8, whole_executor=True) == ms.TaskPlan(1, cores, None)
    # Otherwise a task per batch up to the parallelism (2), the cores shared between them.
    assert ms.plan_tasks(session, 2000, 8) == ms.TaskPlan(2, max(1, cores // 2), None)
    assert ms.plan_tasks(session, 8, 8) == ms.TaskPlan(1, cores, None)
    # Partitions set by hand share the cores; never less than one thread each.
    assert ms.plan_tasks(session, 2000, 8, True, configured=2).cpu_threads == max(1, cores // 2)
    assert ms.task_profile(session, 0, ms.plan_tasks(session, 2000, 8, True)) is None   # local: no profiles


def test_on_gpus_every_plan_keeps_one_engine_per_task_gpu(monkeypatch):
    from types import SimpleNamespace

    from veclip import model_stage as ms

    session = SimpleNamespace(sparkContext=_Master("spark://cluster:7077", 8, {"spark.task.resource.gpu.amount": "1"}))
    assert ms.plan_tasks(session, 2000, 8, whole_executor=True) == ms.TaskPlan(8, None, None)
    monkeypatch.setattr(ms, "task_device", lambda: "cuda:0")
    local = SimpleNamespace(sparkContext=_Master("local[2]"))
    assert ms.plan_tasks(local, 2000, 8, whole_executor=True) == ms.TaskPlan(2, None, None)   # a local GPU


def test_a_cluster_is_asked_for_whole_executor_cpu_tasks_and_gpus_only_where_needed():
    from pyspark.resource import ResourceProfile

    from veclip import model_stage as ms

    cluster = _Master("spark://cluster:7077", 8, {"spark.executor.cores": "4"})
    session = type("S", (), {"sparkContext": cluster})()
    whole = ms.TaskPlan(2, 4, 4)
    profile = ms.task_profile(session, 0, whole)
    assert isinstance(profile, ResourceProfile) and profile.taskResources["cpus"].amount == 4
    assert ms.task_profile(session, 0, ms.TaskPlan(8)) is None          # the cluster's own task settings
    gpu = ms.task_profile(session, 1, ms.TaskPlan(8))
    assert gpu.taskResources["gpu"].amount == 1 and "cpus" not in gpu.taskResources
    # Already what every task gets: no profile.
    set_up = type("S", (), {"sparkContext": _Master("spark://c:7077", 8, {"spark.task.resource.gpu.amount": "1"})})()
    assert ms.task_profile(set_up, 1, ms.TaskPlan(8)) is None
