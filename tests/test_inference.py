"""The shared batch-inference mechanism: batching, fault isolation, output checks, in Spark too."""

import pandas as pd
import pytest

from veclip import inference


def upper(batch: pd.DataFrame):
    out = []
    for t in batch["text"]:
        if t == "bad-row":
            out.append(ValueError("cannot read this row"))
        else:
            out.append(t.upper())
    return out


def explode_on_poison(batch: pd.DataFrame):
    if (batch["text"] == "poison").any():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return [t.upper() for t in batch["text"]]


def frames(texts, size):
    df = pd.DataFrame({"key": [f"k{i}" for i in range(len(texts))], "text": texts})
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


def test_batches_are_regrouped_independent_of_frame_size():
    seen = []

    def record(batch):
        seen.append(len(batch))
        return list(batch["text"])

    out = list(inference.run_batches(record, iter(frames([str(i) for i in range(10)], 3)), 4, ["key"], "out"))
    assert seen == [4, 4, 2]
    assert pd.concat(out)["out"].tolist() == [str(i) for i in range(10)]


def test_a_failing_batch_marks_only_the_bad_row():
    texts = ["a", "b", "poison", "c", "d"]
    out = pd.concat(inference.run_batches(explode_on_poison, iter(frames(texts, 5)), 5, ["key"], "out"))
    assert out["out"].tolist() == ["A", "B", None, "C", "D"]
    assert out["error"].isna().tolist() == [True, True, False, True, True]
    assert "out of memory" in out["error"].iloc[2]


def test_row_level_errors_are_reported_per_row():
    out = pd.concat(inference.run_batches(upper, iter(frames(["x", "bad-row", "y"], 3)), 8, ["key"], "out"))
    assert out["out"].tolist() == ["X", None, "Y"]
    assert out["error"].iloc[1] == "ValueError: cannot read this row"


def test_wrong_number_of_outputs_is_an_error_on_the_rows():
    out = inference.predict_rows(lambda b: [], pd.DataFrame({"text": ["a", "b"]}))
    assert out == [(None, "RuntimeError: model returned 0 outputs for 1 rows")] * 2


def test_map_batches_in_spark_with_per_worker_cache(spark):
    df = spark.createDataFrame([(f"k{i}", "bad-row" if i == 3 else f"t{i}") for i in range(20)], "key string, text string")
    out = inference.map_batches(df.repartition(3), load=lambda device: upper, cache_key="test:upper",
                                batch_size=4, keep=["key"], output="out").toPandas().sort_values("key")
    assert len(out) == 20 and out["out"].isna().sum() == 1
    assert out.set_index("key").loc["k3", "error"].startswith("ValueError")


def test_map_batches_refuses_missing_columns(spark):
    df = spark.createDataFrame([("a",)], "text string")
    with pytest.raises(ValueError, match="columns \\['key'\\] not in input"):
        inference.map_batches(df, load=lambda d: upper, cache_key="x", batch_size=2, keep=["key"], output="o")


def torch_threads(device):
    import torch

    return lambda batch: [str(torch.get_num_threads())] * len(batch)


def test_cpu_tasks_run_torch_with_the_task_cores_not_every_core(spark):
    # Left at torch's default, each of N task slots would run N threads (oversubscribed, many times slower).
    df = spark.createDataFrame([(f"k{i}",) for i in range(6)], "key string")
    out = inference.map_batches(df.repartition(2), load=torch_threads, cache_key="test:threads",
                                batch_size=3, keep=["key"], output="threads").toPandas()
    task_cpus = int(spark.conf.get("spark.task.cpus", "1"))
    assert out["threads"].astype(int).tolist() == [task_cpus] * 6


def test_a_whole_partition_predict_gets_every_frame_in_one_call_and_still_isolates_failures():
    seen = []

    def whole(batch):
        seen.append(len(batch))
        return explode_on_poison(batch)

    whole.whole_partition = True
    texts = [f"t{i}" for i in range(9)] + ["poison"]
    out = pd.concat(inference.run_batches(whole, iter(frames(texts, 3)), 2, ["key"], "out"))
    assert seen[0] == 10  # all four frames at once, batch_size 2 ignored
    assert out["key"].tolist() == [f"k{i}" for i in range(10)]
    assert out["out"].tolist()[:9] == [t.upper() for t in texts[:9]] and out["out"].iloc[9] is None
    assert "out of memory" in out["error"].iloc[9]
    assert list(inference.run_batches(whole, iter([]), 2, ["key"], "out")) == []


def test_a_whole_partition_predict_with_a_row_bound_gets_calls_of_at_most_that_many_rows():
    seen = []

    def bounded(batch):
        seen.append(len(batch))
        return explode_on_poison(batch)

    bounded.whole_partition, bounded.max_rows_per_call = True, 4
    texts = [f"t{i}" for i in range(9)] + ["poison"]
    out = pd.concat(inference.run_batches(bounded, iter(frames(texts, 3)), 2, ["key"], "out"))
    assert seen[:3] == [4, 4, 2]           # batch_size 2 ignored; the last call fails and is split down to the row
    assert out["key"].tolist() == [f"k{i}" for i in range(10)]
    assert out["out"].tolist()[:9] == [t.upper() for t in texts[:9]] and "out of memory" in out["error"].iloc[9]


def test_a_task_told_its_thread_count_runs_torch_with_it(spark):
    # A task that owns its executor (vLLM on CPU, model_stage.plan_tasks) gets more than spark.task.cpus.
    df = spark.createDataFrame([(f"k{i}",) for i in range(4)], "key string")
    out = inference.map_batches(df.repartition(1), load=torch_threads, cache_key="test:threads2",
                                batch_size=4, keep=["key"], output="threads", cpu_threads=2).toPandas()
    assert out["threads"].astype(int).tolist() == [2] * 4


def test_whole_partition_in_spark_sees_each_partition_once(spark):
    def load(device):
        def sizes(batch):
            return [str(len(batch))] * len(batch)

        sizes.whole_partition = True
        return sizes

    df = spark.createDataFrame([(f"k{i}",) for i in range(12)], "key string").repartition(2)
    out = inference.map_batches(df, load=load, cache_key="test:whole", batch_size=2, keep=["key"],
                                output="n").toPandas()
    sizes = out["n"].astype(int)
    # each row reports the size of the one batch it was in: n rows of size n per partition, never batch_size 2
    assert len(out) == 12 and all(n > 2 and (sizes == n).sum() % n == 0 for n in sizes.unique())
