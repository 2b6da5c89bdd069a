"""MLflow: one place that points the client at the configured backend and opens runs.

Locally the backend is SQLite under paths.root (the model registry needs a database) with
artifacts beside it; `make mlflow-ui` shows it. On Databricks set `mlflow.tracking_uri: databricks`
and `mlflow.registry_uri: databricks-uc`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional

import mlflow

from veclip.config import Config, flatten
from veclip.report import StageReport


# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless the experiment's kind tag
# says it holds model-training runs; with this tag it opens on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def configure(cfg: Config) -> str:
    """Point MLflow at the configured backend and experiment; return the experiment id.

    The experiment carries `EXPERIMENT_KIND_TAG` = `EXPERIMENT_KIND`: set when it is created, and
    added to an existing experiment that has no kind (a kind set by someone else is kept).
    """
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_registry_uri)
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    kind = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if exp is not None:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:
            mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    elif cfg.mlflow_tracking_uri.startswith("sqlite:"):
        # Artifacts next to the database, not in ./mlruns of whatever directory the job ran from.
        artifacts = "file://" + os.path.join(cfg.paths.root, "mlartifacts")
        exp_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts, tags=kind)
    else:
        exp_id = mlflow.create_experiment(cfg.mlflow.experiment, tags=kind)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def log_config(cfg: Config) -> None:
    """The resolved config as params (MLflow caps a value at 6000 characters)."""
    params = {k: str(v)[:6000] for k, v in flatten(cfg).items()}
    items = list(params.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i:i + 100]))


@contextlib.contextmanager
def job_run(cfg: Config, name: str, tags: Optional[dict[str, Any]] = None) -> Iterator[Optional[mlflow.ActiveRun]]:
    """An MLflow run for a job (nested when one is already active), or nothing when tracking is off."""
    if not cfg.mlflow.enabled:
        yield None
        return
    configure(cfg)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=name, nested=nested, tags={"veclip.job": name, **(tags or {})}) as run:
        if not nested:
            log_config(cfg)
        yield run


def log_report(report: StageReport) -> None:
    if mlflow.active_run() is None:
        return
    mlflow.log_metrics(report.metrics())
    mlflow.log_text(report.format(), f"reports/{report.stage}.txt")
