"""The demo's noisy crawl (veclip.demo.crawl): deterministic, the asked share of relevant AltTexts, a
manifest that matches the shards, shards the real ingest stage reads (broken files quarantined with a
reason, duplicates kept for dedupe), and evaluation sets the evaluate stage's readers load.

Needs Fashion-MNIST (`apt-get install dataset-fashion-mnist`); skips with that command otherwise.
"""

import json
import tarfile
from collections import defaultdict

import pandas as pd
import pytest

from tests.conftest import REPO

N, RELEVANT, SEED = 40, 0.25, 3


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    from veclip.demo import sources
    from veclip.demo.crawl import build_crawl

    if not sources.available("fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    root = tmp_path_factory.mktemp("demo-crawl")
    a = build_crawl(str(root / "a"), n=N, relevant=RELEVANT, seed=SEED, shard_size=15)
    b = build_crawl(str(root / "b"), n=N, relevant=RELEVANT, seed=SEED, shard_size=15)
    return dict(root=root, a=a, b=b, manifest=pd.read_parquet(root / "a" / "manifest.parquet"))


def _members(path):
    by_key = defaultdict(dict)
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, _, ext = m.name.partition(".")
            by_key[key][ext] = tf.extractfile(m).read()
    return by_key


def test_the_crawl_is_a_function_of_its_settings(crawl):
    from veclip.demo.crawl import build_crawl

    root = crawl["root"]
    shards = sorted(p.name for p in (root / "a").glob("crawl-*.tar"))
    assert shards == sorted(p.name for p in (root / "b").glob("crawl-*.tar")) and len(shards) == 3
    for name in shards:
        assert (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes(), name
    pd.testing.assert_frame_equal(crawl["manifest"], pd.read_parquet(root / "b" / "manifest.parquet"))
    other = build_crawl(str(root / "c"), n=N, relevant=RELEVANT, seed=SEED + 1, shard_size=15)
    assert set(pd.read_parquet(root / "c" / "manifest.parquet").alt_text) != set(crawl["manifest"].alt_text)
    assert other["samples"] == crawl["a"]["samples"]
    again = build_crawl(str(root / "a"), n=N, relevant=RELEVANT, seed=SEED, shard_size=15)   # cached
    assert again == crawl["a"]


def test_share_of_relevant_alttexts_and_kinds(crawl):
    from veclip.demo.crawl import NAMES

    m = crawl["manifest"]
    originals = m[m.kind == "original"]
    assert len(originals) == N and originals.key.is_unique and m.key.is_unique
    assert originals.relevant.sum() == round(RELEVANT * N) == crawl["a"]["relevant_originals"]
    assert not m[m.kind != "original"].relevant.any()
    for row in originals[originals.relevant].itertuples():
        names = NAMES[row.class_name.lower()]
        assert any(n.lower() in row.alt_text.lower() for n in names), (row.class_name, row.alt_text)
    assert m.kind.value_counts().to_dict() == {"original": N, "duplicate": 2, "near_duplicate": 2, "broken": 1}
    copies = m[m.kind != "original"]
    assert copies.duplicate_of.isin(originals.key).all()
    gt = originals.set_index("key")
    assert (copies.caption.values == gt.loc[copies.duplicate_of, "caption"].values).all()
    assert m.caption.str.len().gt(0).all() and m.alt_text.str.len().gt(0).all()


def test_manifest_matches_the_shards(crawl):
    m = crawl["manifest"].set_index("shard_key")
    seen = []
    for path in sorted((crawl["root"] / "a").glob("crawl-*.tar")):
        for key, parts in _members(path).items():
            assert sorted(parts) == ["jpg", "json", "txt"], key
            row = m.loc[key]
            assert row.shard == path.name
            meta = json.loads(parts["json"])
            assert (meta["url"], meta["key"], meta["status"]) == (row.url, key, "success")
            assert parts["txt"].decode() == row.alt_text
            if row.kind != "broken":
                assert meta["width"] == meta["height"] and meta["width"] >= 32
            seen.append(key)
    assert sorted(seen) == sorted(m.index)


def test_shards_ingest_with_broken_files_quarantined(crawl, spark, make_cfg):
    from veclip.ingest.stage import run_ingest
    from veclip.tables import Tables

    cfg = make_cfg(f"ingest.inputs={crawl['a']['inputs']}", "ingest.files_per_partition=4")   # one task: less start-up
    report = run_ingest(cfg, spark)
    assert report.broken() == []
    tables = Tables(cfg, spark)
    bronze = tables.read("bronze").select("key", "image_sha256", "alt_text").toPandas().set_index("key")
    quarantine = tables.read("quarantine").toPandas().set_index("key")
    m = crawl["manifest"].set_index("key")
    assert sorted(bronze.index) == sorted(m.index[m.kind != "broken"])
    assert sorted(quarantine.index) == sorted(m.index[m.kind == "broken"])
    assert quarantine.reason.isin(["truncated", "not_an_image"]).all() and quarantine.detail.str.len().gt(0).all()
    dups = m[m.kind == "duplicate"]
    assert (bronze.loc[dups.index, "image_sha256"].values ==
            bronze.loc[dups.duplicate_of, "image_sha256"].values).all()     # exact copies for dedupe to find
    near = m[m.kind == "near_duplicate"]
    assert (bronze.loc[near.index, "image_sha256"].values != bronze.loc[near.duplicate_of, "image_sha256"].values).all()


def test_eval_sets_load_through_the_evaluate_readers(tmp_path):
    from veclip.config.evaluate import RetrievalSet, ZeroShotSet
    from veclip.demo import sources
    from veclip.demo.crawl import write_eval_sets
    from veclip.evaluate.datasets import load_retrieval
    from veclip.evaluate.labelled import load_labelled

    if not sources.available("fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    sets = write_eval_sets(str(tmp_path / "eval"), n=12)
    names = [s["name"] for s in sets["zeroshot"]]
    assert "fashion-mnist" in names
    for spec in sets["zeroshot"]:
        data = load_labelled(ZeroShotSet(**spec))
        assert len(data.labels) == 12 and len(data.classnames) == 10
        assert len(next(data.image_batches(64))) == 12
    retrieval = load_retrieval(RetrievalSet(**sets["retrieval"][0]))
    # one image per distinct description: identical captions would tie in the ranking
    assert len(retrieval.images) == len(retrieval.captions) == len(set(retrieval.captions))
    assert len(retrieval.images) == sum(c["retrieval"] for c in sets["images"].values())
    assert all(c["zeroshot"] == 12 and 0 < c["retrieval"] <= 12 for c in sets["images"].values())
    assert all(any(c.split()[-1] in cap for c in ("background",)) for cap in retrieval.captions)
    assert write_eval_sets(str(tmp_path / "eval"), n=12) == sets                      # cached
    assert str(REPO) not in sets["retrieval"][0]["path"]                              # written where asked
