"""veclip.tracking on a real SQLite MLflow backend: the experiment opens on its runs in MLflow 3's UI."""

import mlflow

from veclip.config import load_config
from veclip.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, configure, job_run


def _cfg(root, name="veclip"):
    return load_config(None, [f"paths.root={root}", f"mlflow.experiment={name}"])


def test_a_new_experiment_is_created_as_a_model_development_experiment(tmp_path):
    cfg = _cfg(tmp_path)
    exp_id = configure(cfg)
    exp = mlflow.MlflowClient(cfg.mlflow_tracking_uri).get_experiment(exp_id)
    assert exp.name == "veclip" and exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == EXPERIMENT_KIND
    assert exp.artifact_location == f"file://{tmp_path}/mlartifacts"
    with job_run(cfg, "ingest") as run:
        mlflow.log_metric("ingest.rows", 3)
    assert run.info.experiment_id == exp_id
    assert configure(cfg) == exp_id  # found, not created again


def test_an_existing_experiment_without_a_kind_gets_one_and_another_kind_is_kept(tmp_path):
    cfg = _cfg(tmp_path, "older")
    client = mlflow.MlflowClient(cfg.mlflow_tracking_uri)
    old_id = client.create_experiment("older")  # as an earlier version of veclip created it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old_id).tags
    assert configure(cfg) == old_id
    assert client.get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    genai = _cfg(tmp_path, "chosen-by-a-user")
    user_id = client.create_experiment("chosen-by-a-user", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert configure(genai) == user_id
    assert client.get_experiment(user_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"
