"""A failure storm in a model stage (every row failing) stops the stage with FailureRateExceeded, so
the job exits non-zero and gold is not rebuilt; the failed rows stay committed as error rows, and
`--retry-errors` redoes them once the cause is gone. Real Spark + Delta, the tiny random-weight
LLaVA and the real SmolLM2; the failures come from real inputs (damaged image bytes, captions that
are nothing but a URL), not from mocks."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from tests.bronze_fixture import bronze_frame, bronze_row, cc12m_samples
from tests.conftest import REPO
from tests.test_imaging import gradient16, huge_png
from tests.test_rewrite_model import smollm2_config
from veclip import schemas
from veclip.caption.stage import run_caption
from veclip.caption.tiny import build_tiny_llava
from veclip.config import load_config
from veclip.report import FailureRateExceeded, StageReport, check_failure_rate, failure_rate_exceeded
from veclip.rewrite.stage import run_rewrite
from veclip.tables import Tables

SOURCE = "storm.tar"


def test_the_ceiling_is_a_share_of_this_runs_rows():
    assert not failure_rate_exceeded(0, 0, 0.5)          # nothing processed, nothing to judge
    assert not failure_rate_exceeded(5, 10, 0.5) and failure_rate_exceeded(6, 10, 0.5)
    assert not failure_rate_exceeded(10, 10, 1.0)        # 1.0: no ceiling
    report = StageReport("caption")
    check_failure_rate(report, 900, 900, 0.5, final=False)   # mid-run: too few rows to judge yet
    with pytest.raises(FailureRateExceeded, match="caption: 1,000 of the 1,000 rows"):
        check_failure_rate(report, 1000, 1000, 0.5, final=False)
    with pytest.raises(FailureRateExceeded, match=r"3 of the 4 rows of this run failed \(75%\)") as err:
        check_failure_rate(report, 3, 4, 0.5, final=True, errors={"UndecodableImage": 3})
    assert "caption.max_failure_rate=0.5; errors: UndecodableImage x3" in str(err.value)
    assert "--retry-errors" in str(err.value) and err.value.report is report


def test_caption_storm_stops_the_stage_and_the_rows_are_retried_when_the_cause_is_gone(
        spark, tmp_path, cc12m_shard):
    llava = build_tiny_llava(str(tmp_path / "tiny-llava"))
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [
        f"paths.root={tmp_path / 'root'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
        "mlflow.enabled=false", f"caption.model={llava}", "caption.max_new_tokens=4", "caption.batch_size=4"])
    tables = Tables(cfg, spark)
    broken = [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, b"\xff\xd8\xff\xe0" + b"\0" * 900,
              b"<html>503 Service Unavailable</html>", b"GIF89a" + b"\x01" * 300]
    rows = [bronze_row(data, f"alt text {i}", SOURCE, f"s{i}", size=(640, 480)) for i, data in enumerate(broken)]
    tables.merge("bronze", bronze_frame(spark, rows), ["key"])
    keys = sorted(r["key"] for r in rows)

    with pytest.raises(FailureRateExceeded, match=r"caption: 4 of the 4 rows of this run failed \(100%\), "
                                                  r"more than caption.max_failure_rate=0.5; errors: UndecodableImage x4"):
        run_caption(cfg, spark)
    caps = tables.read("captions").toPandas()
    assert sorted(caps["key"]) == keys and caps["error"].notna().all()  # committed before the stop

    # The cause goes away (here: the bytes are repaired, among them a 9400x9400 PNG and a 16-bit PNG).
    real = [data for _, data, _, _ in cc12m_samples(str(cc12m_shard))[:2]]
    fixed = [bronze_row(data, r["alt_text"], SOURCE, r["source_key"], size=(640, 480))
             for r, data in zip(rows, real + [huge_png(tmp_path / "huge.png"), gradient16()])]
    tables.merge("bronze", bronze_frame(spark, fixed), ["key"], update=["image", "image_sha256"])
    report = run_caption(cfg, spark, retry_errors=True)
    assert report.broken() == []
    assert (report.counts["to_caption"], report.counts["captioned"], report.counts["failed"]) == (4, 4, 0)
    caps = tables.read("captions").toPandas()
    assert sorted(caps["key"]) == keys and caps["error"].isna().all() and caps["caption"].str.len().gt(0).all()


def test_rewrite_storm_stops_the_stage_and_the_rows_are_retried_when_the_cause_is_gone(
        spark, tmp_path, cc12m_shard):
    cfg = smollm2_config(tmp_path / "root", "caption.captioner_id=cap-storm", "rewrite.max_new_tokens=24",
                         "spark.shuffle_partitions=2")
    tables = Tables(cfg, spark)
    samples = cc12m_samples(str(cc12m_shard))[:3]
    rows = [bronze_row(data, alt, SOURCE, stem, url=url) for stem, data, alt, url in samples]
    tables.merge("bronze", bronze_frame(spark, rows), ["key"])
    now = dt.datetime(2026, 1, 1)

    def captions(texts):
        return spark.createDataFrame([(r["key"], "cap-storm", t, "test/captioner", None, "p", "h", "{}", None, now, now)
                                      for r, t in zip(rows, texts)], schemas.CAPTIONS)

    # A captioner that wrote only URLs: nothing is left to fuse once the URL is cleaned away.
    tables.merge("captions", captions([f"https://cdn.example.com/img/{i}.jpg" for i in range(3)]), ["key", "captioner"])
    with pytest.raises(FailureRateExceeded, match=r"rewrite: 3 of the 3 rows of this run failed \(100%\), "
                                                  r"more than rewrite.max_failure_rate=0.5; errors: ValueError x3"):
        run_rewrite(cfg, spark)
    vecap = tables.read("vecap").toPandas()
    assert len(vecap) == 3 and vecap["error"].str.contains("no caption text").all()

    good = ["two loaves of golden bread on a white cloth",
            "a colorful cathedral with onion domes and people walking on a square",
            "cameras, lenses and a backpack laid out on a wooden floor"]
    tables.merge("captions", captions(good), ["key", "captioner"], update=["caption"])
    report = run_rewrite(cfg, spark, retry_errors=True)
    assert report.broken() == [] and report.counts["to_rewrite"] == 3 and report.counts["failed"] == 0
    vecap = tables.read("vecap").where(F.col("error").isNull()).toPandas()
    assert sorted(vecap["key"]) == sorted(r["key"] for r in rows) and vecap["vecap"].str.len().gt(0).all()
