"""The one upsert helper every stage uses: idempotent, key-deduplicating, readable by delta-rs."""

import deltalake
import pytest


def test_merge_creates_inserts_new_keys_and_is_idempotent(spark, tables):
    df = spark.createDataFrame([("a", 1), ("b", 2), ("b", 2)], "key string, v int")
    first = tables.merge("demo", df, ["key"])
    assert (first.inserted, first.version) == (2, 0)
    again = tables.merge("demo", df, ["key"])
    assert (again.inserted, again.updated, again.version) == (0, 0, 0)
    more = tables.merge("demo", spark.createDataFrame([("a", 9), ("c", 3)], "key string, v int"), ["key"])
    assert (more.inserted, more.updated) == (1, 0)
    upd = tables.merge("demo", spark.createDataFrame([("a", 9)], "key string, v int"), ["key"], update=["v"])
    assert upd.updated == 1
    rows = dict(deltalake.DeltaTable(tables.location("demo")).to_pandas()[["key", "v"]].values.tolist())
    assert rows == {"a": 9, "b": 2, "c": 3}


def test_missing_returns_only_unfinished_work(spark, tables):
    src = spark.createDataFrame([("a",), ("b",), ("c",)], "key string")
    assert tables.missing(src, "done", ["key"]).count() == 3
    tables.merge("done", spark.createDataFrame([("a", None), ("b", "boom")], "key string, error string"), ["key"])
    assert sorted(r.key for r in tables.missing(src, "done", ["key"]).collect()) == ["c"]
    assert sorted(r.key for r in tables.missing(src, "done", ["key"], where="error IS NULL").collect()) == ["b", "c"]


def test_read_of_missing_table_says_which(tables):
    with pytest.raises(FileNotFoundError, match="table 'silver' does not exist"):
        tables.read("silver")


def test_merge_refuses_missing_key_column(spark, tables):
    with pytest.raises(ValueError, match="key column"):
        tables.merge("demo", spark.createDataFrame([(1,)], "v int"), ["key"])


def test_overwrite_and_table_properties_work_by_path(spark, tables):
    tables.overwrite("demo", spark.createDataFrame([("a", 1)], "key string, v int"),
                     {"delta.enableDeletionVectors": "false"})
    tables.overwrite("demo", spark.createDataFrame([("b", "x")], "key string, w string"))   # schema replaced
    assert [tuple(r) for r in tables.read("demo").collect()] == [("b", "x")] and tables.version("demo") == 1
    tables.set_properties("demo", {"veclip.inputs": "bronze=3"})
    props = tables.properties("demo")
    assert props["veclip.inputs"] == "bronze=3"
    assert tables.source("demo") == {"path": tables.location("demo")}
    assert deltalake.DeltaTable(tables.location("demo")).version() == 2
