"""The one driver of the model stages (caption, rewrite): snapshot the to-do rows once, then generate
and MERGE them slice by slice.

    snapshot = snapshot_todo(tables, todo_df, work_name("caption", captioner), rows=n, commit_every=2000)
    outcome = run_slices(spark, tables, snapshot, stage, report, max_failure_rate=0.5)

A stage computes its to-do DataFrame (one anti-join against its target table, with every column the
model needs: key + image for caption, key + alt_text + caption + alt_text_low_info for rewrite) and
the expected row count, and describes itself as a `ModelStage`: target table, MERGE keys, the columns
`--retry-errors` overwrites, and `generate` (slice rows -> the target table's rows plus `_outcome`,
the row's label). This module does the rest:

- Snapshot, once per run. The to-do rows get their slice number `pmod(xxhash64(key), n_slices)`
  (n_slices = ceil(rows / commit_every)) and are written once to a work table,
  `<paths.root>/_work/<prefix><stage>_<model id>_todo` (`Tables.write_work_table`), one directory
  and one file per slice. Reading slice i opens that file only (partition pruning), so a slice costs
  the same whatever the crawl size; re-running the anti-join over bronze for every slice (image bytes
  and all) made a crawl of N rows read bronze N / commit_every times.
- Slices, in order. Each one: read from the snapshot, `generate`, `localCheckpoint(eager=True)`
  (generate exactly once: a MERGE may read its source twice), count the `_outcome` labels, MERGE on
  the table's keys, update the report and the progress line, then `check_failure_rate` (a failure
  storm stops the run after the slice that shows it, its rows committed as retryable error rows).
- The work table is deleted at the end of a successful run; the next run overwrites any left over.

Tasks (`plan_tasks`, per slice): one task per `batch_size` rows up to the cluster's parallelism; for
the `vllm` rewrite on CPU one task per executor, its engine owning all the executor's cores
(`cpu_threads`, handed to `veclip.inference.map_batches`; on a cluster a stage-level resource profile
asks for whole-executor tasks, `task_profile`). `caption.partitions` / `rewrite.partitions` override
the count; on CPU the cores are shared out between the tasks.

Kill and resume: a killed job loses at most the slice in flight. A rerun computes its to-do set
afresh (one anti-join against what was committed) and snapshots it again; the MERGE on the keys
never duplicates a row, whatever the slicing of the earlier run.

Outcome labels: "failed:<error type>" for a row with an error (`outcome_of`), else a label of the
stage's (caption: "captioned"; rewrite: "rewritten" or "fallback:<reason>"). The report gets one
count per label family, the part before ":" (`ModelStage.outcomes`); the failure-rate check counts
the "failed" family against all rows processed so far in this run.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from veclip.devices import task_device
from veclip.inference import error_kind
from veclip.progress import Progress, SparkProgress
from veclip.report import StageReport, check_failure_rate
from veclip.tables import Tables

SLICE = "slice"        # the snapshot's slice-number column (its partition column)
OUTCOME = "_outcome"   # the label column of `generate`'s result, dropped before the MERGE
FAILED = "failed"


@dataclass(frozen=True)
class Snapshot:
    """A run's to-do rows in work table `name`, `rows` of them, in `n_slices` slices (0: nothing to do)."""

    name: str
    rows: int
    n_slices: int


@dataclass(frozen=True)
class ModelStage:
    """What `run_slices` needs to know of a stage.

    `generate(rows, expected)`: the slice's to-do rows (the snapshot's columns, `slice` dropped) and
    about how many there are -> the target table's rows plus the `_outcome` label column.
    `outcomes`: the label families counted in the report, "failed" among them, in report order.
    """

    name: str
    table: str
    keys: Sequence[str]
    update: Sequence[str]
    outcomes: Sequence[str]
    generate: Callable[[DataFrame, float], DataFrame]
    unit: str = "rows"


def work_name(stage: str, model_id: str) -> str:
    """The work table of one stage and model: two captioners captioning on one root do not share one."""
    return f"{stage}_{re.sub(r'[^A-Za-z0-9_.-]', '_', model_id)}_todo"


def slice_of(n_slices: int) -> Column:
    """A row's slice, from its key alone."""
    return F.pmod(F.xxhash64("key"), F.lit(n_slices)).cast("int")


def snapshot_todo(tables: Tables, todo: DataFrame, name: str, rows: int, commit_every: int) -> Snapshot:
    """Write `todo` (`rows` rows expected) once, sliced into about `commit_every` rows per slice."""
    n_slices = math.ceil(rows / commit_every) if rows > 0 else 0
    if n_slices:
        tables.write_work_table(name, todo.withColumn(SLICE, slice_of(n_slices)), SLICE, n_slices)
    return Snapshot(name, rows, n_slices)


def read_slice(tables: Tables, snapshot: Snapshot, i: int) -> DataFrame:
    """Slice i of the snapshot (its file only), without the slice column."""
    return tables.read_work_table(snapshot.name).where(F.col(SLICE) == i).drop(SLICE)


def outcome_of(ok: Column) -> Column:
    """The `_outcome` label: "failed:<error type>" where the row's `error` is set, else `ok`."""
    return F.when(F.col("error").isNotNull(), F.concat(F.lit(f"{FAILED}:"), error_kind("error"))).otherwise(ok)


def run_slice(tables: Tables, stage: ModelStage, rows: DataFrame, expected: float) -> Counter:
    """Generate one slice, MERGE it into the stage's table; returns its rows by `_outcome` label."""
    # Generate exactly once: a MERGE may read its source twice.
    result = stage.generate(rows, expected).localCheckpoint(eager=True)
    got = Counter({r[OUTCOME]: int(r["n"]) for r in result.groupBy(OUTCOME).agg(F.count("*").alias("n")).collect()})
    tables.merge(stage.table, result.drop(OUTCOME), list(stage.keys), update=list(stage.update))
    return got


def family_counts(outcome: Counter, families: Sequence[str]) -> dict[str, int]:
    """Labels -> counts per family (the part before ':'), every family present (0 when none)."""
    counts = dict.fromkeys(families, 0)
    for label, n in outcome.items():
        counts[label.split(":", 1)[0]] += n
    return counts


def errors_of(outcome: Counter) -> dict[str, int]:
    """Failed rows by error type, from the outcome labels."""
    return {k.split(":", 1)[1]: v for k, v in outcome.items() if k.startswith(f"{FAILED}:")}


def run_slices(spark: SparkSession, tables: Tables, snapshot: Snapshot, stage: ModelStage, report: StageReport,
               max_failure_rate: float) -> Counter:
    """Generate and MERGE every slice of `snapshot`, in order; returns this run's rows by outcome label.

    After each slice the report's `stage.outcomes` counts hold the run's totals so far, and a failure
    storm raises `FailureRateExceeded` (veclip.report) with the work table left for the next run to
    replace. On success the work table is deleted.
    """
    outcome = Counter()
    for family in stage.outcomes:
        report.count(family, 0)
    progress = Progress(snapshot.rows, label=stage.name, unit=stage.unit, every_s=0)
    for i in range(snapshot.n_slices):
        with SparkProgress(spark, f"{stage.name} slice {i + 1}/{snapshot.n_slices}"):
            got = run_slice(tables, stage, read_slice(tables, snapshot, i), snapshot.rows / snapshot.n_slices)
        outcome.update(got)
        progress.update(sum(got.values()), force=True)
        report.counts.update(family_counts(outcome, stage.outcomes))
        # A failure storm stops here, its rows committed as retryable error rows (see veclip.report).
        check_failure_rate(report, report.counts[FAILED], sum(outcome.values()), max_failure_rate,
                           final=i == snapshot.n_slices - 1, errors=errors_of(outcome))
    if snapshot.n_slices:
        tables.drop_work_table(snapshot.name)
    return outcome


def on_gpus(spark: SparkSession, gpus_per_task: float) -> bool:
    """Whether the model tasks run on GPUs: asked for (`gpus_per_task`, the cluster's GPU task setting), or a
    local session on a machine with a CUDA GPU (its tasks use the first one, `veclip.devices.task_device`)."""
    if gpus_per_task > 0 or spark.sparkContext.getConf().get("spark.task.resource.gpu.amount", None):
        return True
    return spark.sparkContext.master.startswith("local") and task_device() != "cpu"


def executor_layout(spark: SparkSession) -> tuple[int, int]:
    """(executors, cores per executor). A local session is one executor with the master's N threads."""
    sc = spark.sparkContext
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", sc.master)
    if local:
        n = local.group(1)
        return 1, (os.cpu_count() or 1) if n == "*" else int(n or 1)
    cores = sc.getConf().get("spark.executor.cores", None)
    executors = max(1, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)   # it lists the driver too
    return executors, int(cores) if cores else max(1, sc.defaultParallelism // executors)


@dataclass(frozen=True)
class TaskPlan:
    """How a slice runs: `partitions` Spark tasks; on CPU each task's torch runs `cpu_threads` threads
    (None: the task's `spark.task.cpus`); `cpus_per_task` (None: the cluster's setting) is asked of a
    cluster's scheduler with a stage-level resource profile."""

    partitions: int
    cpu_threads: Optional[int] = None
    cpus_per_task: Optional[int] = None


def plan_tasks(spark: SparkSession, expected: float, batch_size: int, whole_executor: bool = False,
               configured: Optional[int] = None, gpus_per_task: float = 0.0) -> TaskPlan:
    """The Spark tasks of a slice of about `expected` rows: `configured` of them, else
    - one task per `batch_size` rows, up to the cluster's default parallelism (model replicas working at
      once; on GPUs one per task GPU);
    - with `whole_executor`, on CPU: one task per executor, so one engine that owns all of the executor's
      cores. The rewrite asks for it with vLLM: vLLM batches the whole partition continuously, and two
      one-thread engines on two cores decode slower than one two-thread engine (measured:
      benchmarks/engine_throughput.py).
    On CPU the executors' cores are shared out between the tasks (`cpu_threads`, at least spark.task.cpus):
    fewer tasks than cores means more threads each.
    """
    per_batch = max(1, min(spark.sparkContext.defaultParallelism, math.ceil(expected / batch_size)))
    if on_gpus(spark, gpus_per_task):
        return TaskPlan(configured or per_batch)
    executors, cores = executor_layout(spark)
    partitions = configured or (executors if whole_executor else per_batch)
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    threads = max(task_cpus, min(cores, executors * cores // partitions))
    cluster = not spark.sparkContext.master.startswith("local")
    return TaskPlan(partitions, threads, threads if cluster and threads > task_cpus else None)


def task_profile(spark: SparkSession, gpus_per_task: float, plan: TaskPlan):
    """A stage-level resource profile asking for the plan's CPUs and `gpus_per_task` GPUs per task, when a
    cluster is not already set up that way (a local session schedules none: None)."""
    if spark.sparkContext.master.startswith("local"):
        return None
    conf = spark.sparkContext.getConf()
    configured = conf.get("spark.task.resource.gpu.amount", None)
    gpus = gpus_per_task if gpus_per_task > 0 and not (configured is not None and float(configured) == gpus_per_task) else 0
    cpus = plan.cpus_per_task or 0     # plan_tasks sets it only above spark.task.cpus
    if not gpus and not cpus:
        return None   # every task already gets what it needs
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    requests = TaskResourceRequests()
    if gpus:
        requests = requests.resource("gpu", gpus)
    if cpus:
        requests = requests.cpus(cpus)
    return ResourceProfileBuilder().require(requests).build
