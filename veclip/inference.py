"""One batch-inference mechanism for every model stage (captioner, rewriter, embedders).

A stage supplies a picklable `load(device) -> predict` function; `predict(batch: pd.DataFrame)`
returns one output per row: a string, or an Exception instance for a row that failed on its own
(e.g. an image that does not decode). This module does the rest, the way Spark's
`predict_batch_udf` does, plus what a long GPU job needs:

- the model loads once per Python worker (cached by `cache_key`, reused across tasks);
- rows are regrouped into batches of `batch_size` whatever the partition size;
- a batch that raises (CUDA out-of-memory included) is split in halves and retried, down to
  single rows, so one bad row marks only itself with an `error`;
- the number of outputs is checked against the number of inputs;
- each task uses the GPU Spark assigned to it (`spark.task.resource.gpu.amount`), else the first GPU,
  else the CPU (`veclip.devices.task_device`);
- a predict that batches by itself (vLLM's continuous batching) sets the attribute
  `whole_partition = True`: it then gets the whole partition in one call instead of `batch_size`
  chunks, or calls of its `max_rows_per_call` rows where it sets one (a failing call is still split
  in halves down to the failing row).

    out = map_batches(df, load=CaptionerLoader(cfg), cache_key="captioner:llava", batch_size=16,
                      keep=["key"], output="caption")
    # out columns: key, caption, error, started_at, finished_at
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
from typing import Callable, Iterator, Optional, Sequence, Union

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from veclip.devices import task_device

log = logging.getLogger(__name__)

Output = Union[str, None, Exception]
Predict = Callable[[pd.DataFrame], Sequence[Output]]
Load = Callable[[str], Predict]

_WORKER_CACHE: dict[str, Predict] = {}


@contextlib.contextmanager
def arrow_rows_per_batch(spark: SparkSession, rows: int) -> Iterator[None]:
    """Arrow records per batch (= the rows a pandas UDF or mapInPandas call gets) for the work inside
    the block; the session's own value is restored afterwards."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if before is not None:
            spark.conf.set(key, before)
        else:
            spark.conf.unset(key)


def fit_cpu_threads(device: str, threads: Optional[int] = None) -> None:
    """On CPU, give torch `threads` threads, by default as many as the task has cores (`spark.task.cpus`).
    Left alone, every Python worker starts one thread per machine core: N task slots x N threads
    oversubscribe the executor and OpenMP's spinning makes generation many times slower (seen: 5-20x on
    2 cores). Spark's Python workers start with OMP_NUM_THREADS = spark.task.cpus, so a task that owns a
    whole executor (an in-process vLLM engine on CPU, `veclip.model_stage.plan_tasks`) must say so here,
    before its engine starts: vLLM's CPU worker then fixes the thread count."""
    import torch
    from pyspark import TaskContext

    if not device.startswith("cpu"):
        return
    if threads is None:
        ctx = TaskContext.get()
        threads = max(1, ctx.cpus()) if ctx is not None else torch.get_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cached_predictor(cache_key: str, load: Load, device: str) -> Predict:
    """Load once per Python worker and device; later tasks on the same worker reuse the model."""
    key = f"{cache_key}@{device}"
    if key not in _WORKER_CACHE:
        t0 = time.monotonic()
        _WORKER_CACHE[key] = load(device)
        log.info("loaded %s on %s in %.1fs", cache_key, device, time.monotonic() - t0)
    return _WORKER_CACHE[key]


def _is_oom(err: BaseException) -> bool:
    return "out of memory" in str(err).lower() or type(err).__name__ == "OutOfMemoryError"


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


def error_kind(column: str):
    """Spark column: the exception type an `error` value starts with (`UndecodableImage: ...` ->
    `UndecodableImage`, as `_describe` writes it); null where there is no error."""
    from pyspark.sql import functions as F

    return F.when(F.col(column).isNotNull(), F.substring_index(F.col(column), ":", 1))


def predict_rows(predict: Predict, batch: pd.DataFrame) -> list[tuple[str | None, str | None]]:
    """(output, error) per row. A failing batch is split in halves until the failure is isolated."""
    try:
        outputs = list(predict(batch))
        if len(outputs) != len(batch):
            raise RuntimeError(f"model returned {len(outputs)} outputs for {len(batch)} rows")
    except Exception as err:  # noqa: BLE001 - any model failure must stay on its rows
        if _is_oom(err):
            _free_gpu_memory()
        if len(batch) == 1:
            return [(None, _describe(err))]
        mid = len(batch) // 2
        log.warning("batch of %d failed (%s); retrying in halves", len(batch), _describe(err)[:200])
        return predict_rows(predict, batch.iloc[:mid]) + predict_rows(predict, batch.iloc[mid:])
    return [(None, _describe(o)) if isinstance(o, Exception) else (o, None) for o in outputs]


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def run_batches(predict: Predict, frames: Iterator[pd.DataFrame], batch_size: int, keep: Sequence[str],
                output: str) -> Iterator[pd.DataFrame]:
    """Regroup incoming frames into `batch_size` rows, predict, and yield keep + output/error/timing.

    A predict with `whole_partition = True` gets all incoming frames as one batch (batch_size unused), or
    batches of its `max_rows_per_call` rows where it sets one (a captioner decodes a call's images at once).
    """
    if getattr(predict, "whole_partition", False):
        batch_size = getattr(predict, "max_rows_per_call", None) or sys.maxsize
    pending = pd.DataFrame()
    for frame in frames:
        pending = pd.concat([pending, frame], ignore_index=True) if len(pending) else frame.reset_index(drop=True)
        while len(pending) >= batch_size:
            yield _one_batch(predict, pending.iloc[:batch_size], keep, output)
            pending = pending.iloc[batch_size:].reset_index(drop=True)
    if len(pending):
        yield _one_batch(predict, pending, keep, output)


def _one_batch(predict: Predict, batch: pd.DataFrame, keep: Sequence[str], output: str) -> pd.DataFrame:
    started = _now()
    results = predict_rows(predict, batch)
    out = batch[list(keep)].copy()
    out[output] = [r[0] for r in results]
    out["error"] = [r[1] for r in results]
    out["started_at"] = started
    out["finished_at"] = _now()
    return out


def map_batches(df: DataFrame, load: Load, cache_key: str, batch_size: int, keep: Sequence[str],
                output: str, profile=None, cpu_threads: Optional[int] = None) -> DataFrame:
    """Run a model over `df` in Spark; returns `keep` columns + output, error, started_at, finished_at.

    `profile`: an optional pyspark ResourceProfile (e.g. GPUs per task) for the model's Spark stage.
    `cpu_threads`: torch threads of each task on CPU (None: the task's cores, `fit_cpu_threads`).
    """
    if batch_size < 1:
        raise ValueError(f"{cache_key}: batch_size must be >= 1, got {batch_size}")
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise ValueError(f"{cache_key}: columns {missing} not in input {df.columns}")
    schema = StructType([df.schema[c] for c in keep] + [
        StructField(output, StringType(), True), StructField("error", StringType(), True),
        StructField("started_at", TimestampType(), False), StructField("finished_at", TimestampType(), False)])

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        device = task_device()
        fit_cpu_threads(device, cpu_threads)
        predict = cached_predictor(cache_key, load, device)
        yield from run_batches(predict, frames, batch_size, keep, output)

    return df.mapInPandas(run, schema, profile=profile)
