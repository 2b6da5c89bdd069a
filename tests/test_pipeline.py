"""The chain's plan check, the gold table and the gallery, on real images and real Delta."""

import datetime as dt
import hashlib
import io

import deltalake
import pytest
from PIL import Image

from veclip import gallery, schemas, stages
from veclip.gold import bound_jpeg, run_gold


def test_select_keeps_pipeline_order_and_names_unknown_stages():
    assert [s.name for s in stages.select(["gold", "ingest"])] == ["ingest", "gold"]
    with pytest.raises(ValueError, match="unknown stage.*'captoin'.*ingest, dedupe"):
        stages.select(["captoin"])


def test_plan_check_refuses_a_stage_whose_input_nothing_provides():
    plan = stages.select(["caption", "rewrite"])
    with pytest.raises(ValueError, match="stage 'caption' reads 'bronze'"):
        stages.check_plan(plan, available=lambda t: False)
    stages.check_plan(plan, available=lambda t: t == "bronze")  # captions come from the caption stage
    stages.check_plan(stages.select(None), available=lambda t: t == "crawl")


def test_bound_jpeg_shrinks_shorter_side_and_flattens_alpha():
    im = Image.new("RGBA", (800, 400), (255, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = Image.open(io.BytesIO(bound_jpeg(buf.getvalue(), 256, 90)))
    assert out.format == "JPEG" and out.size == (512, 256) and out.mode == "RGB"
    assert out.getpixel((10, 10))[1] > 240  # transparent -> white, not black
    small = io.BytesIO()
    Image.new("RGB", (100, 50)).save(small, format="JPEG")
    assert Image.open(io.BytesIO(bound_jpeg(small.getvalue(), 256, 90))).size == (100, 50)  # never upscaled


def _shard_rows(path, n):
    """(key, image bytes, AltText) of the first n samples of the shard."""
    from tests.bronze_fixture import cc12m_samples

    return [(stem, data, alt) for stem, data, alt, _ in cc12m_samples(path)[:n]]


@pytest.fixture(scope="module")
def gold_world(spark, tmp_path_factory, cc12m_shard):
    """bronze (4 real images + 1 broken), captions, vecap for 3 of them; then gold is built twice."""
    from veclip.config import load_config
    from tests.conftest import REPO
    from veclip.tables import Tables

    root = tmp_path_factory.mktemp("gold")
    cfg = load_config(str(REPO / "conf" / "local.yaml"),
                      [f"paths.root={root}", "spark.shuffle_partitions=2", "mlflow.enabled=false"])
    t = Tables(cfg, spark)
    now = dt.datetime(2026, 1, 1)
    rows = _shard_rows(cc12m_shard, 4) + [("broken", b"\xff\xd8\xff\xe0 not really a jpeg", "a broken one")]
    bronze = [(k, None, d, hashlib.sha256(d).hexdigest(), 10, 10, "JPEG", "RGB", a, a, "shard.tar", k,
               "webdataset", now) for k, d, a in rows]
    t.merge("bronze", spark.createDataFrame(bronze, schemas.BRONZE), ["key"])
    cap, rw = cfg.caption.captioner_id, cfg.rewrite.rewriter_id
    caps = [(k, cap, f"a photo number {i}", "m", None, "p", "h", "{}", None, now, now) for i, (k, _, _) in enumerate(rows)]
    t.merge("captions", spark.createDataFrame(caps, schemas.CAPTIONS), ["key", "captioner"])
    vecaps = [(k, rw, cap, f"vecap {i}", i == 1, "m", None, "v1", "h", "{}", None, now, now)
              for i, (k, _, _) in enumerate(rows[:3])]
    t.merge("vecap", spark.createDataFrame(vecaps, schemas.VECAP), ["key", "rewriter"])
    first = run_gold(cfg, spark)
    second = run_gold(cfg, spark)
    return cfg, t, first, second


def test_gold_accounts_for_every_canonical_row(gold_world):
    cfg, t, first, _ = gold_world
    assert first.counts["canonical"] == 5
    assert first.counts["rows"] == 4 and first.counts["quarantined"] == 1
    assert first.counts["with_vecap"] == 3
    assert first.broken() == []
    q = t.read("quarantine").where("stage = 'gold'").collect()
    assert [(r.key, r.reason) for r in q] == [("broken", "reencode_failed")]


def test_gold_is_plain_parquet_with_bounded_jpegs_and_versions(gold_world):
    cfg, t, _, _ = gold_world
    dt_ = deltalake.DeltaTable(t.location("gold"))
    assert "deletionVectors" not in (dt_.protocol().reader_features or [])
    df = dt_.to_pandas()
    assert set(df.columns) == set(schemas.GOLD.fieldNames())
    for data in df["image"]:
        im = Image.open(io.BytesIO(data))
        assert im.format == "JPEG" and min(im.size) <= cfg.gold.image_size
    assert df["captions_version"].notna().all() and df["vecap_version"].notna().all()
    assert df["vecap"].isna().sum() == 1  # the row without a VeCap keeps its AltText for training


def test_gold_rebuild_is_skipped_when_inputs_are_unchanged(gold_world):
    _, t, first, second = gold_world
    assert "skipped" in second.details and second.counts["rows"] == 4
    assert t.version("gold") == first.details["gold_version"]


def test_gallery_renders_images_and_escapes_text(tmp_path, cc12m_shard):
    (k, data, alt), = _shard_rows(cc12m_shard, 1)
    path = gallery.write_gallery([{"key": k, "image": data, "alt_text": "<script>x</script>", "caption": "c",
                                   "vecap": "v", "fallback_used": True}], str(tmp_path / "g.html"), "t", note="n")
    page = open(path).read()
    assert "data:image/jpeg;base64," in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "fallback" in page and 'class="note"' in page
