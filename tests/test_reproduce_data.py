"""make reproduce's data helpers on real Delta tables: the texts of a rate's gold (rate_texts), the
caption-only arm's root (caption_root), and the knowledge probe (probe_zeroshot) on a tiny CLIP model."""

from __future__ import annotations

import io
import json
import os
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.test_eval_models import save_tiny
from veclip.demo import reproduce as rp
from veclip.schemas import GOLD, VECAP
from veclip.tables import Tables

RATE = 0.1
KEYS = ["k3", "k0", "k4", "k1", "k2"]           # written unsorted: rate_texts sorts by key
CLASSES = {"k0": "sneaker", "k1": "cat", "k2": "dog", "k3": "bag", "k4": "ankle boot"}
T0 = datetime(2024, 1, 1)


def gold_rows(keys, tag=""):
    return [{"key": k, "image": b"\xff\xd8 not decoded here", "alt_text": f"alt {k}", "caption": f"caption {k}{tag}",
             "vecap": f"vecap {k}{tag}", "captioner": "demo", "rewriter": "llm", "silver_version": 0,
             "captions_version": 0, "vecap_version": 0} for k in keys]


def vecap_row(key, rewriter, fallback_used, error=None):
    return {"key": key, "rewriter": rewriter, "captioner": "demo", "vecap": None if error else f"vecap {key}",
            "fallback_used": fallback_used, "model_id": "m", "model_revision": None, "prompt_version": "1",
            "prompt_sha256": None, "generation_params": "{}", "error": error, "started_at": T0, "finished_at": T0}


@pytest.fixture
def plan(tmp_path, spark):
    """A rate folder as prepare_rate leaves it: root/ with gold and vecap tables, crawl/manifest.parquet."""
    plan = rp.Plan(out=str(tmp_path / "out"), captioner_dir=str(tmp_path / "captioner"))
    cfg = rp.config(plan, os.path.join(rp.rate_dir(plan, RATE), "root"))
    tables, ours = Tables(cfg, spark), cfg.rewrite.rewriter_id
    tables.overwrite("gold", spark.createDataFrame(gold_rows(KEYS), GOLD))
    vecaps = [vecap_row("k0", ours, False), vecap_row("k0", "another-llm", True),   # k0: ours says fused
              vecap_row("k1", ours, True),                                          # k1: ours fell back
              vecap_row("k2", "another-llm", False),                                # k2: only another rewriter's
              vecap_row("k3", ours, True, error="timeout")]                         # k3: ours failed; k4: none
    tables.overwrite("vecap", spark.createDataFrame(vecaps, VECAP))
    crawl = os.path.join(rp.rate_dir(plan, RATE), "crawl")
    os.makedirs(crawl)
    pd.DataFrame({"key": list(CLASSES) + ["dropped-by-dedupe"], "class_name": list(CLASSES.values()) + ["cat"],
                  "alt_text": "the crawl's own", "relevant": True}).to_parquet(os.path.join(crawl, "manifest.parquet"))
    return plan


def rate_tables(plan, spark, root="root"):
    return Tables(rp.config(plan, os.path.join(rp.rate_dir(plan, RATE), root)), spark)


def test_rate_texts_join_gold_the_configured_rewriters_vecaps_and_the_manifest(plan, spark):
    texts = rp.rate_texts(plan, RATE, spark)
    assert list(texts.columns) == ["key", "alt_text", "caption", "vecap", "fallback_used", "class_name"]
    assert texts.key.tolist() == sorted(KEYS)                                  # one row per gold key
    assert texts.class_name.tolist() == [CLASSES[k] for k in sorted(KEYS)]
    assert texts.alt_text.tolist() == [f"alt {k}" for k in sorted(KEYS)]      # gold's, not the manifest's
    assert texts.vecap.tolist() == [f"vecap {k}" for k in sorted(KEYS)]
    fallback = [None if pd.isna(v) else bool(v) for v in texts.fallback_used]
    assert fallback == [False, True, None, None, None]     # k2: another rewriter, k3: an error, k4: no row

    path = os.path.join(rp.rate_dir(plan, RATE), "texts.parquet")
    assert os.path.isfile(path)
    rate_tables(plan, spark).overwrite("gold", spark.createDataFrame(gold_rows(["k0", "k9"], " new"), GOLD))
    again = rp.rate_texts(plan, RATE, spark)                # written once: the gold change is not seen
    pd.testing.assert_frame_equal(again, texts)


def test_caption_root_is_the_rates_gold_with_the_caption_as_vecap_written_once(plan, spark):
    root = rp.caption_root(plan, RATE, spark)
    assert root == os.path.join(rp.rate_dir(plan, RATE), "caption-root")
    tables = rate_tables(plan, spark, "caption-root")
    gold = tables.read("gold").toPandas().sort_values("key").reset_index(drop=True)
    source = rate_tables(plan, spark).read("gold").toPandas().sort_values("key").reset_index(drop=True)
    assert gold.key.tolist() == sorted(KEYS)
    assert gold.vecap.tolist() == gold.caption.tolist() == [f"caption {k}" for k in sorted(KEYS)]
    pd.testing.assert_frame_equal(gold.drop(columns="vecap"), source.drop(columns="vecap"))
    assert tables.properties("gold")["delta.enableDeletionVectors"] == "false"    # plain Parquet, as gold
    with open(os.path.join(root, "caption-gold.json")) as f:
        assert json.load(f)["rows"] == len(KEYS)

    version = tables.version("gold")
    rate_tables(plan, spark).overwrite("gold", spark.createDataFrame(gold_rows(["k0"], " new"), GOLD))
    assert rp.caption_root(plan, RATE, spark) == root
    assert tables.version("gold") == version and tables.read("gold").count() == len(KEYS)


def zeroshot_set(path, classnames, per_class=2):
    """A labelled parquet (label, label_name, jpeg) of flat-colour images, `per_class` per class."""
    rng = np.random.default_rng(0)
    rows = []
    for label, name in enumerate(classnames):
        for _ in range(per_class):
            buf = io.BytesIO()
            Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(0, 256, 3))).save(buf, format="JPEG")
            rows.append({"label": label, "label_name": name, "jpeg": buf.getvalue()})
    pd.DataFrame(rows).to_parquet(path)
    return {"name": os.path.basename(path).removesuffix(".parquet"), "path": str(path)}


def test_probe_zeroshot_scores_only_the_classes_with_probe_names(tmp_path):
    from veclip.demo.crawl import probe_names

    names = probe_names()
    assert names["cat"] and names["dog"] and names["airplane"] and not names["ankle boot"]
    save_tiny(tmp_path / "clip", seed=0)
    sets = {"zeroshot": [zeroshot_set(tmp_path / "four.parquet", ["Cat", "ankle boot", "dog", "airplane"]),
                         zeroshot_set(tmp_path / "two.parquet", ["ankle boot", "cat"])]}
    out = rp.probe_zeroshot(str(tmp_path / "clip"), sets, batch_size=4)
    assert set(out) == {"probe/four/top1", "probe/four/chance", "probe/two/top1", "probe/two/chance"}
    assert out["probe/four/chance"] == pytest.approx(100 / 3)       # ankle boot has no probe names
    top1 = out["probe/four/top1"]
    assert 0 <= top1 <= 100 and top1 * 6 / 100 == pytest.approx(round(top1 * 6 / 100))   # of the 6 probed images
    assert out["probe/two/chance"] == 100.0 and out["probe/two/top1"] == 100.0          # one class probed
