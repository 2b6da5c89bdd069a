"""The MLflow side of evaluation: find a registered version, record its results, move `champion`.

    ref = resolve("models:/veclip-clip@candidate")       # pinned to the version the alias names now
    record(ref, results, metrics, fingerprint)            # run metrics + tags on the model version
    promote(ref, "coco-mini/i2t_r1", 12.5, fingerprint)   # champion moves only if 12.5 beats its value

A registered model is a pyfunc whose artifact `clip` is a model folder (open_clip or Hugging Face).
Results are logged to the active run (the job's), linked to the version's logged model (MLflow 3
`model_id`) and to each benchmark as an MLflow dataset, and set as `eval.<dataset>.<metric>` tags on
the version, with `eval.fingerprint` (datasets, subsets, prompts) so that only like-for-like values
are ever compared by `--promote`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from typing import Optional

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from veclip.evaluate.model_ref import ModelRef, folder_kind

log = logging.getLogger(__name__)

CHAMPION = "champion"
URI_RE = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def parse_uri(uri: str) -> tuple[str, Optional[str], Optional[str]]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/3` -> (NAME, None, "3")."""
    m = URI_RE.match(uri)
    if not m:
        raise ValueError(f"eval.model={uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def tag_key(metric: str) -> str:
    return "eval." + metric.replace("/", ".")


def clip_folder(local: str) -> str:
    """The `clip` artifact folder inside a downloaded pyfunc model (named by the MLmodel file)."""
    path = None
    mlmodel = os.path.join(local, "MLmodel")
    if os.path.isfile(mlmodel):
        with open(mlmodel) as f:
            doc = yaml.safe_load(f) or {}
        artifacts = (doc.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        if "clip" in artifacts:
            path = os.path.join(local, artifacts["clip"]["path"])
    path = path or os.path.join(local, "artifacts", "clip")
    if not os.path.isdir(path) or folder_kind(path) is None:
        raise ValueError(f"the registered model at {local} has no `clip` artifact holding a CLIP model folder "
                         f"(looked at {path})")
    return path


def _logged_model_id(local: str, source: str) -> Optional[str]:
    mlmodel = os.path.join(local, "MLmodel")
    if os.path.isfile(mlmodel):
        with open(mlmodel) as f:
            model_id = (yaml.safe_load(f) or {}).get("model_id")
        if model_id:
            return model_id
    m = re.match(r"^models:/(m-[0-9a-f]+)$", source or "")
    return m.group(1) if m else None


def resolve(uri: str) -> ModelRef:
    """Look the version up (an alias is pinned to the version it names now) and fetch its files."""
    name, alias, version = parse_uri(uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        raise ValueError(f"eval.model={uri}: no such registered model version ({e.message})") from None
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}")
    folder = clip_folder(local)
    log.info("%s -> %s version %s (run %s), model files in %s", uri, name, mv.version, mv.run_id, folder)
    return ModelRef(uri, folder_kind(folder), folder, name=name, version=str(mv.version), run_id=mv.run_id,
                    model_id=_logged_model_id(local, mv.source), extra={"alias": alias} if alias else {})


def record(ref: ModelRef, results: list[dict], metrics: dict[str, float], fingerprint: str,
           datasets: Optional[dict] = None) -> None:
    """Log metrics to the active run (linked to the model and datasets) and tag the model version."""
    run = mlflow.active_run()
    if run is not None:
        mlflow.set_tags({f"veclip.eval.{k}": str(v) for k, v in ref.describe().items()}
                        | {"veclip.eval.fingerprint": fingerprint})
        for r in results:
            per_set = {f"{r['name']}/{k}": round(float(v), 4) for k, v in r["metrics"].items()}
            dataset = (datasets or {}).get(r["name"])
            if dataset is not None:
                mlflow.log_input(dataset, context="evaluation")
            mlflow.log_metrics(per_set, model_id=ref.model_id, dataset=dataset)
    if ref.name and ref.version:
        client = MlflowClient()
        tags = {tag_key(k): f"{v:.4f}" for k, v in metrics.items()}
        tags.update({"eval.fingerprint": fingerprint,
                     "eval.date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        if run is not None:
            tags["eval.run_id"] = run.info.run_id
        for key, value in tags.items():
            client.set_model_version_tag(ref.name, ref.version, key, value)
        log.info("tagged %s version %s with %d evaluation tags", ref.name, ref.version, len(tags))


def promote(ref: ModelRef, metric: str, value: float, fingerprint: str) -> dict:
    """Move `champion` to this version when `value` beats the champion's recorded value of `metric`."""
    if not (ref.name and ref.version):
        raise ValueError("--promote needs a registered model version (eval.model=models:/NAME@ALIAS)")
    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias(ref.name, CHAMPION)
    except MlflowException:
        champion = None
    decision = {"metric": metric, "value": value, "version": ref.version, "promoted": False}
    if champion is None:
        reason = f"no {CHAMPION} yet"
    elif str(champion.version) == ref.version:
        return decision | {"reason": f"version {ref.version} already is the {CHAMPION}"}
    else:
        old, old_fp = champion.tags.get(tag_key(metric)), champion.tags.get("eval.fingerprint")
        decision["champion_version"] = str(champion.version)
        if old is None:
            return decision | {"reason": f"the {CHAMPION} (version {champion.version}) has no recorded {metric}: "
                               f"evaluate it first (eval.model=models:/{ref.name}@{CHAMPION})"}
        if old_fp != fingerprint:
            return decision | {"reason": f"the {CHAMPION}'s {metric} was measured on another evaluation setup "
                               f"(fingerprint {old_fp} vs {fingerprint}): not comparable"}
        decision["champion_value"] = float(old)
        if value <= float(old):
            return decision | {"reason": f"{metric} {value:.4f} does not beat the {CHAMPION}'s {float(old):.4f}"}
        reason = f"{metric} {value:.4f} beats the {CHAMPION}'s {float(old):.4f}"
    client.set_registered_model_alias(ref.name, CHAMPION, ref.version)
    log.info("%s: %s now points at version %s (%s)", ref.name, CHAMPION, ref.version, reason)
    return decision | {"promoted": True, "reason": reason}
