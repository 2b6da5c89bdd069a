"""The evaluate stage: one model, every configured benchmark, results to a table, JSON and MLflow.

    spark-submit jobs/evaluate.py --config conf/local.yaml --set eval.model=models:/veclip-clip@candidate
    report = run_evaluate(cfg, spark, promote=False)   # promote=True: move `champion` when the metric is better

Reads: the model (see veclip.evaluate.models) and the benchmark files named in `eval.retrieval` and
`eval.zeroshot`. Writes: a results JSON (eval.output), metrics and tags on the active MLflow run and
the model version. Needs: one device for the embeddings (the first GPU, else CPU). The benchmarks are
small files read on the driver, so Spark is not used here (the session is the job's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import warnings
from typing import Optional

import pandas as pd

from veclip.config import Config
from veclip.evaluate import registry
from veclip.evaluate.datasets import load_retrieval
from veclip.evaluate.labelled import load_labelled
from veclip.evaluate.models import load_encoder, resolve_model
from veclip.evaluate.report import flat_metrics, format_tables, metric_keys, write_json
from veclip.evaluate.retrieval import evaluate_retrieval
from veclip.evaluate.zeroshot import evaluate_zeroshot, load_templates
from veclip.report import StageReport

log = logging.getLogger(__name__)

IMAGE_PARTS = ("images_other_splits", "images_without_captions", "images_not_selected", "images_unreadable",
               "images_evaluated")
CAPTION_PARTS = ("captions_unknown_image", "captions_without_text", "captions_over_cap", "captions_not_selected",
                 "captions_of_unreadable_images", "captions_evaluated")
SAMPLE_PARTS = ("samples_not_selected", "samples_unreadable", "samples_evaluated")


def check_request(cfg: Config, promote: bool) -> list[str]:
    """Refuse up front what would only fail after a long evaluation; the metric keys it will produce."""
    e = cfg.eval
    if not e.retrieval and not e.zeroshot:
        raise ValueError("evaluate: no benchmark configured (set eval.retrieval and/or eval.zeroshot)")
    keys = metric_keys([s.name for s in e.retrieval], [s.name for s in e.zeroshot])
    if promote:
        if not cfg.mlflow.enabled:
            raise ValueError("--promote needs MLflow (mlflow.enabled is false)")
        if not e.model_spec.startswith("models:/"):
            raise ValueError(f"--promote needs a registered model (eval.model=models:/NAME@ALIAS), not {e.model_spec}")
        if not e.promote_metric:
            raise ValueError(f"--promote needs eval.promote_metric, one of: {', '.join(keys)}")
        if e.promote_metric not in keys:
            raise ValueError(f"--promote: eval.promote_metric={e.promote_metric!r} is not computed by this "
                             f"evaluation; choose one of: {', '.join(keys)}")
    return keys


def fingerprint(cfg: Config, results: list[dict]) -> str:
    """Identifies the evaluation setup (datasets, subsets, prompts, images scored), not the model."""
    e = cfg.eval
    setup = {"max_images": e.max_images,
             "retrieval": [[s.name, s.format, s.split, s.captions_per_image] for s in e.retrieval],
             "zeroshot": [[s.name, s.format, os.path.basename(s.classnames or ""), os.path.basename(s.templates)]
                          for s in e.zeroshot],
             "scored": [[r["name"], r["counts"].get("images_evaluated", r["counts"].get("samples_evaluated"))]
                        for r in results]}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:16]


def _count(report: StageReport, result: dict) -> None:
    n, c = result["name"], result["counts"]
    if result["task"] == "retrieval":
        groups = [("images_in_file", IMAGE_PARTS), ("captions_in_file", CAPTION_PARTS)]
    else:
        groups = [("samples_in_file", SAMPLE_PARTS)]
    for total, parts in groups:
        for key in (total,) + parts:
            report.count(f"{n}.{key}", c.get(key, 0))
        report.identity(f"{n} {total.split('_')[0]}", [f"{n}.{total}"], [f"{n}.{p}" for p in parts])


def _lineage(result: dict, data) -> Optional[object]:
    """An MLflow dataset for the benchmark (source, digest, rows), so metrics link to what was scored."""
    try:
        import mlflow.data
        if result["task"] == "retrieval":
            df = pd.DataFrame({"image": [os.path.basename(data.images[i]) for i in data.text_image],
                               "caption": data.captions})
        else:
            df = pd.DataFrame({"label": data.labels.astype("float64")})
        with warnings.catch_warnings():
            # "can be interpreted in multiple ways": MLflow registers the local source class twice.
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            return mlflow.data.from_pandas(df, source=data.source, name=result["name"])
    except Exception as e:  # noqa: BLE001 - lineage is an extra; the metrics are still logged
        log.warning("%s: could not describe the dataset for MLflow: %s", result["name"], e)
        return None


def _evaluate_all(cfg: Config, encoder) -> tuple[list[dict], dict]:
    e, results, datasets = cfg.eval, [], {}
    log.info("benchmark paths (relative ones in the config were resolved against the current directory, %s): "
             "%s", os.getcwd(), ", ".join(s.path for s in e.retrieval + e.zeroshot))
    for spec in e.retrieval:
        data = load_retrieval(spec, e.max_images)
        results.append(evaluate_retrieval(encoder, data, e.batch_size, e.workers))
        datasets[spec.name] = _lineage(results[-1], data) if cfg.mlflow.enabled else None
    for spec in e.zeroshot:
        data = load_labelled(spec, e.max_images)
        results.append(evaluate_zeroshot(encoder, data, load_templates(spec.templates), e.batch_size, e.workers))
        datasets[spec.name] = _lineage(results[-1], data) if cfg.mlflow.enabled else None
    return results, datasets


def default_output(cfg: Config, label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join(cfg.paths.root, "eval", f"{slug}_{stamp}.json")


def run_evaluate(cfg: Config, spark=None, *, promote: bool = False) -> StageReport:
    check_request(cfg, promote)
    spec = cfg.eval.model_spec
    if spec.startswith("models:/"):
        import mlflow
        mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
        mlflow.set_registry_uri(cfg.mlflow_registry_uri)
    report = StageReport("evaluate")
    ref = resolve_model(spec, cfg.eval.weights)
    encoder = load_encoder(ref, cfg.eval.device)
    log.info("evaluating %s (%s) on %s", ref.label, ref.kind, encoder.device)
    results, datasets = _evaluate_all(cfg, encoder)
    for result in results:
        _count(report, result)
    metrics, fp = flat_metrics(results), fingerprint(cfg, results)
    table = format_tables(ref.label, results)
    print(table, flush=True)
    doc = {"model": ref.describe(), "device": encoder.device, "fingerprint": fp,
           "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "settings": cfg.eval.model_dump(mode="json"), "metrics": metrics, "results": results}
    # The JSON is written first, so that a registry problem cannot lose a long evaluation.
    path = write_json(doc, cfg.eval.output or default_output(cfg, ref.label))
    if cfg.mlflow.enabled:
        registry.record(ref, results, metrics, fp, datasets)
    if promote:
        doc["promotion"] = registry.promote(ref, cfg.eval.promote_metric, metrics[cfg.eval.promote_metric], fp)
        print(f"promotion: {'PROMOTED' if doc['promotion']['promoted'] else 'kept'} - "
              f"{doc['promotion']['reason']}", flush=True)
        write_json(doc, path)
    _log_files(doc, table)
    report.details.update({"model": f"{ref.label} ({ref.kind})", "results": path, "fingerprint": fp})
    if "promotion" in doc:
        report.details["promotion"] = doc["promotion"]["reason"]
    return report.finish()


def _log_files(doc: dict, table: str) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_dict(doc, "eval/results.json")
        mlflow.log_text(table, "eval/table.txt")
