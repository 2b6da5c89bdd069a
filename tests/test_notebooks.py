"""The Databricks notebooks in notebooks/, run top to bottom, in order, as a user would run them.

tests/notebooks.py executes each notebook's code cells against the session's local Spark, with a
`dbutils.widgets` stand-in whose values point the pipeline at a tmp `paths.root` (local Delta
directories, a SQLite MLflow store under it), the real CC12M shard, a tiny random-weight captioner and
CPU-sized training and evaluation. The four notebooks run once for the module (they build on each other:
bronze/silver → captions/vecap/gold → a registered `candidate` → evaluation and promotion); the tests
read what they printed, displayed and left behind.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import sys

import pytest

from tests.conftest import REPO, shared_path
from tests.notebooks import code_cells, run_notebook
from tests.test_rewrite_model import models_cache

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
MODEL = "veclip-clip"


class _Tee(io.StringIO):
    """Keeps what a notebook prints while still showing it (pytest -s)."""

    def write(self, s: str) -> int:
        sys.__stdout__.write(s)
        return super().write(s)


# Samples of a second, small shard beside the real one: rejections the quarantine view must show, and a
# re-crawled copy of a real image (another URL) that dedupe must group with its original.
BROKEN = {"zero_bytes": "zero_bytes", "truncated_jpeg": "truncated", "not_an_image_html": "not_an_image",
          "too_small": "too_small"}


def _broken_shard(path, cc12m_shard):
    from tests.crawlgen import bad_images, real_images, write_shard

    url, text, jpeg = real_images(cc12m_shard)[0]
    bad = bad_images(jpeg)
    samples = [(f"bad{i:03d}", {"jpg": bad[name], "txt": f"broken sample {name}".encode(),
                                "json": json.dumps({"url": f"https://example.com/{name}.jpg"}).encode()})
               for i, name in enumerate(BROKEN)]
    samples.append(("copy000", {"jpg": jpeg, "txt": text.encode(),
                                "json": json.dumps({"url": "https://mirror.example.com/copy.jpg"}).encode()}))
    write_shard(path, samples)
    return path


def _overrides(root, shards, captioner, coco, cifar) -> str:
    return "; ".join([
        f"paths.root={root}", f"paths.models={models_cache()}",  # the dequantised SmolLM2, kept between runs
        f"ingest.inputs=[{', '.join(map(str, shards))}]",
        f"caption.model={captioner}", "caption.max_new_tokens=8", "caption.batch_size=16",
        "rewrite.max_new_tokens=12", "rewrite.batch_size=16", "rewrite.partitions=1",
        "train.mode=single", "train.max_steps=3", "train.epochs=1", "train.batch_size=8", "train.warmup_steps=1",
        "train.checkpoint_every=3", "train.shuffle_buffer=0", "train.run_name=notebook-test",
        "eval.max_images=16", "eval.batch_size=16", "eval.workers=1",
        f"eval.retrieval=[{{name: coco-mini, format: coco, path: {coco}/captions.json, images_dir: {coco}/images}}]",
        f"eval.zeroshot=[{{name: cifar10, format: parquet, path: {cifar}/test.parquet, templates: simple}}]",
        "eval.promote_metric=coco-mini/i2t_r1",
    ])


@pytest.fixture(scope="module")
def runs(spark, cc12m_shard, tmp_path_factory):
    """Notebooks 1-4 in order, then 3 and 4 again: the second candidate is compared with the first champion."""
    coco, cifar = shared_path("coco-mini"), shared_path("cifar10")
    from veclip.caption.tiny import build_tiny_llava

    base = tmp_path_factory.mktemp("notebooks")
    captioner = build_tiny_llava(str(base / "tiny-llava"))
    root = base / "root"
    broken = _broken_shard(base / "broken.tar", cc12m_shard)
    overrides = _overrides(root, [cc12m_shard, broken], captioner, coco, cifar)
    second = overrides + "; train.seed=1; train.run_name=notebook-test-2"  # a later item wins
    out: dict[str, tuple[dict, str]] = {}
    for label, name, widgets in [
            ("01", "01_ingest_dedupe", {}), ("02", "02_caption_rewrite", {}), ("03", "03_train", {}),
            ("04", "04_evaluate_promote", {"promote": "yes"}),
            ("03b", "03_train", {"overrides": second}), ("04b", "04_evaluate_promote", {"promote": "yes"})]:
        buf = _Tee()
        with contextlib.redirect_stdout(buf):
            # `config` is relative: read from the repository root, as on Databricks
            ns = run_notebook(REPO / "notebooks" / f"{name}.py", spark,
                              {"config": "conf/local.yaml", "overrides": overrides, **widgets})
        out[label] = (ns, buf.getvalue())
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    return out


def _count(text: str, name: str) -> int:
    m = re.search(rf"^\s+{name}\s+([\d,]+)\s*$", text, flags=re.M)
    assert m, f"no '{name}' count in:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_ingest_dedupe_accounting_and_quarantine_reasons(runs):
    from pyspark.sql import functions as F

    ns, printed = runs["01"]
    ingest, dedupe = ns["ingest"], ns["dedupe"]
    assert not ingest.broken() and not dedupe.broken()
    assert "MISMATCH" not in printed and printed.count("  OK") >= 2  # each stage printed its checked identity
    tables = ns["Tables"](ns["cfg"], ns["spark"])
    bronze, silver, quarantine = tables.read("bronze"), ns["silver"], tables.read("quarantine")
    assert bronze.count() == silver.count() == 32 + 1  # the real shard + the re-crawled copy
    assert quarantine.count() == len(BROKEN)  # every input sample is in exactly one of them
    reasons, groups = ns["_shown"]
    assert list(reasons.columns) == ["stage", "reason", "count"]
    assert sorted((r["stage"], r["reason"], r["count"]) for r in reasons.collect()) == \
        sorted(("ingest", reason, 1) for reason in BROKEN.values())
    for reason in BROKEN.values():
        assert reason in printed  # the displayed table
    assert sum(r["count"] for r in groups.collect()) == 33
    # The re-crawled copy and its original form one group: one canonical sample, one exact duplicate.
    [group] = (silver.join(bronze.select("key", "url"), "key")
               .where(F.col("url") == "https://mirror.example.com/copy.jpg").select("dup_group").collect())
    pair = silver.where(F.col("dup_group") == group["dup_group"]).collect()
    assert sorted((r["is_canonical"], r["dup_rule"]) for r in pair) == [(False, "exact_bytes"), (True, None)]


def test_caption_rewrite_shows_rates_and_sample_html(runs):
    from veclip.tables import Tables

    ns, printed = runs["02"]
    for report in (ns["caption"], ns["rewrite"], ns["gold"]):
        assert not report.broken()
    [rates] = ns["_shown"]
    rows = {r["stage"]: r.asDict() for r in rates.collect()}
    assert set(rows) == {"caption", "rewrite"}
    assert rows["caption"]["rows"] == rows["rewrite"]["rows"] > 0
    assert 0 <= rows["rewrite"]["fallback_rate"] <= 1 and 0 <= rows["caption"]["error_rate"] <= 1
    assert "fallback_rate" in printed and "error_rate" in printed
    [html] = ns["_html"]
    cards = html.count('class="card"')
    assert cards == min(24, Tables(ns["cfg"], ns["spark"]).read("gold").count()) > 0
    assert html.count('<img src="data:image/jpeg;base64,') == cards  # thumbnails inline, not links
    for label in ("<b>AltText</b>", "<b>Caption</b>", "<b>VeCap</b>"):
        assert html.count(label) == cards
    assert "random weights" in html  # the tiny captioner is flagged as such


def test_pipeline_notebooks_log_one_mlflow_run_per_stage(runs):
    import mlflow

    client = mlflow.MlflowClient()
    found = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            found.setdefault(run.data.tags.get("veclip.job"), []).append(run)
    for label, stages in (("01", ("ingest", "dedupe")), ("02", ("caption", "rewrite", "gold"))):
        ns, _ = runs[label]
        for stage in stages:
            [run] = found[stage]  # one run per stage cell
            assert run.info.status == "FINISHED"
            report = ns[stage]
            for key, value in report.counts.items():  # the counts the notebook printed
                assert run.data.metrics[f"{stage}.{key}"] == float(value)
            assert client.list_artifacts(run.info.run_id, "reports")[0].path == f"reports/{stage}.txt"


def test_train_logs_a_run_and_registers_a_candidate(runs):
    import mlflow

    ns, printed = runs["03"]
    assert not ns["train"].broken() and _count(printed, "steps") == 3
    client = mlflow.MlflowClient()
    registered = ns["train"].details["registered"]
    assert re.fullmatch(rf"{MODEL} version \d+ @candidate", registered), registered
    assert f"registered: {registered}" in printed
    version = client.get_model_version(MODEL, registered.split()[2])
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["veclip.job"] == "train"
    assert run.data.params["train.resolved.gold_version"] == str(ns["train"].counts["gold_version"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]


def test_evaluate_promotes_per_the_champion_comparison(runs):
    import mlflow

    client = mlflow.MlflowClient()
    metric = "eval.coco-mini.i2t_r1"  # eval.promote_metric, as a model-version tag
    first = runs["03"][0]["train"].details["registered"]
    _, printed = runs["04"]
    assert "promotion: PROMOTED - no champion yet" in printed  # nothing to compare with: the first wins
    # The fixture has run every notebook by now, so the aliases may have moved since 04: the versions come
    # from what each training registered (04 promoted 03's, as asserted above).
    first_version = first.split()[2]
    old = float(client.get_model_version(MODEL, first_version).tags[metric])
    # A second candidate (another seed) is evaluated and compared with that champion.
    second_version = runs["03b"][0]["train"].details["registered"].split()[2]
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == second_version
    assert second_version != first_version, first
    new = float(client.get_model_version(MODEL, second_version).tags[metric])
    _, printed = runs["04b"]
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    if new > old:
        assert "promotion: PROMOTED" in printed and champion == second_version
    else:
        assert f"promotion: kept - coco-mini/i2t_r1 {new:.4f} does not beat" in printed
        assert champion == first_version
    assert any(k.startswith("eval.cifar10.") for k in client.get_model_version(MODEL, second_version).tags)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_thin_driver_of_the_library(path):
    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n")
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells"
    assert "%pip install -r ../requirements-databricks.txt" in text
    assert "# MAGIC %pip install --no-deps .." in text and "dbutils.library.restartPython()" in text
    assert "sys.path" not in text  # the library is installed, not put on the path
    for i, cell in enumerate(cells):
        tree = ast.parse(cell, f"{path.name}[cell {i}]")  # every code cell parses
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                ast.ClassDef, ast.Lambda))]
        assert not defined, f"{path.name} cell {i} defines code; put it in veclip/ and call it"
    calls = "\n".join(cells)
    assert "notebook.widget_config(dbutils" in calls and "notebook.run_stage(" in calls
    imports = {a.name.split(".")[0] for c in cells for n in ast.walk(ast.parse(c))
               if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert imports <= {"os", "sys", "veclip"}, f"{path.name} imports {imports}: only the library, please"
