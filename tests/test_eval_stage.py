"""The evaluate stage against a real MLflow registry (SQLite): a registered pyfunc with the `clip`
artifact, COCO-mini retrieval and CIFAR-10 zero-shot, results on the run and the version, a
deterministic re-run, `--promote`, and the job itself."""

import json
import os
import subprocess
import sys

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, shared_path
from tests.test_eval_models import TEXTS, save_tiny
from veclip import tracking
from veclip.config import load_config
from veclip.evaluate import registry
from veclip.evaluate.models import ModelRef, load_encoder, resolve_model
from veclip.evaluate.stage import run_evaluate

NAME = "veclip-clip-test"


class ClipPyfunc(mlflow.pyfunc.PythonModel):
    """Minimal registered model by the contract: artifact `clip` = an open_clip folder; predict embeds
    `image` (bytes) or else `text` per row."""

    def load_context(self, context):
        from veclip.evaluate.models import OpenClipEncoder
        from veclip import clip

        self.encoder = OpenClipEncoder(*clip.load(context.artifacts["clip"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        from veclip.evaluate.embed import open_image

        out = []
        for image, text in zip(model_input.get("image", [None] * len(model_input)), model_input["text"]):
            emb = (self.encoder.encode_images([open_image(image)]) if image is not None
                   else self.encoder.encode_texts([text or ""]))
            out.append(emb[0].tolist())
        return out


def register(folder, alias="candidate") -> str:
    with mlflow.start_run(run_name="train"):
        info = mlflow.pyfunc.log_model(name="model", python_model=ClipPyfunc(), artifacts={"clip": str(folder)},
                                       pip_requirements=["open_clip_torch"], registered_model_name=NAME)
    MlflowClient().set_registered_model_alias(NAME, alias, info.registered_model_version)
    return str(info.registered_model_version)


def overrides(root, model, max_images):
    coco, cifar = shared_path("coco-mini", "captions.json"), shared_path("cifar10", "test.parquet")
    return [f"paths.root={root}", f"eval.model={model}", f"eval.max_images={max_images}",
            f"eval.retrieval=[{{name: coco-mini, format: coco, path: {coco}}}]",
            f"eval.zeroshot=[{{name: cifar10, format: parquet, path: {cifar}, templates: simple}}]",
            "eval.promote_metric=coco-mini/i2t_r5", "eval.batch_size=32"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-root")
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [f"paths.root={root}"])
    tracking.configure(cfg)
    save_tiny(root / "clip", seed=0)
    assert register(root / "clip") == "1"
    return root


@pytest.fixture(scope="module")
def two_runs(root):
    """Version 1 evaluated twice through the stage, both times with --promote."""
    docs = []
    for i in range(2):
        cfg = load_config(str(REPO / "conf" / "local.yaml"),
                          overrides(root, f"models:/{NAME}@candidate", 20) + [f"eval.output={root}/run{i}.json"])
        with tracking.job_run(cfg, "evaluate") as run:
            report = run_evaluate(cfg, None, promote=True)
        docs.append((json.loads((root / f"run{i}.json").read_text()), report, run.info.run_id))
    return docs


def test_registered_model_loads_its_clip_artifact(root):
    ref = resolve_model(f"models:/{NAME}@candidate")
    assert (ref.name, ref.version, ref.kind) == (NAME, "1", "open_clip") and ref.model_id.startswith("m-")
    by_version = load_encoder(resolve_model(f"models:/{NAME}/1"), "cpu").encode_texts(TEXTS)
    direct = load_encoder(resolve_model(str(root / "clip")), "cpu").encode_texts(TEXTS)
    assert torch.allclose(by_version, direct, atol=1e-6)
    with pytest.raises(ValueError, match="no such registered model version"):
        resolve_model(f"models:/{NAME}@nope")


def test_results_go_to_json_run_and_version(two_runs, root):
    doc, report, run_id = two_runs[0]
    assert report.broken() == []
    assert report.counts["coco-mini.images_evaluated"] == 20 and report.counts["coco-mini.captions_evaluated"] == 100
    assert report.counts["cifar10.samples_evaluated"] == 20
    metrics = doc["metrics"]
    assert set(metrics) == {f"coco-mini/{k}" for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")} \
        | {"cifar10/top1", "cifar10/top5", "cifar10/mean_per_class_recall"}
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    assert metrics["coco-mini/i2t_r1"] <= metrics["coco-mini/i2t_r5"] <= metrics["coco-mini/i2t_r10"]
    client = MlflowClient()
    logged = client.get_run(run_id).data
    assert logged.metrics["cifar10/top1"] == pytest.approx(metrics["cifar10/top1"])
    assert logged.tags["veclip.eval.version"] == "1" and logged.tags["veclip.eval.registered_model"] == NAME
    version = client.get_model_version(NAME, "1")
    assert float(version.tags["eval.coco-mini.i2t_r5"]) == pytest.approx(metrics["coco-mini/i2t_r5"], abs=1e-4)
    assert version.tags["eval.run_id"] == two_runs[1][2] and version.tags["eval.fingerprint"] == doc["fingerprint"]
    logged_model = client.get_logged_model(doc["model"]["model_id"])
    assert {m.key for m in logged_model.metrics} >= {"coco-mini/i2t_r1", "cifar10/top1"}
    assert {d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs} == {"coco-mini", "cifar10"}


def test_evaluation_is_deterministic_and_promotion_is_idempotent(two_runs):
    (first, _, _), (second, _, _) = two_runs
    assert first["metrics"] == second["metrics"] and first["fingerprint"] == second["fingerprint"]
    assert first["promotion"]["promoted"] and first["promotion"]["reason"] == "no champion yet"
    assert not second["promotion"]["promoted"] and "already is the champion" in second["promotion"]["reason"]
    assert str(MlflowClient().get_model_version_by_alias(NAME, "champion").version) == "1"


def test_promote_compares_like_for_like(root):
    client, name = MlflowClient(), "veclip-promote-test"
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=str(root / "clip")).version for _ in range(3)]
    ref = [ModelRef("x", "open_clip", name=name, version=str(v)) for v in versions]
    assert registry.promote(ref[0], "m/x", 5.0, "fp")["promoted"]
    client.set_model_version_tag(name, versions[0], "eval.m.x", "5.0000")
    client.set_model_version_tag(name, versions[0], "eval.fingerprint", "fp")
    assert "does not beat" in registry.promote(ref[1], "m/x", 5.0, "fp")["reason"]
    assert "not comparable" in registry.promote(ref[1], "m/x", 9.0, "other")["reason"]
    assert registry.promote(ref[1], "m/x", 5.5, "fp")["promoted"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(versions[1])
    client.set_registered_model_alias(name, "champion", versions[2])
    assert "has no recorded m/x" in registry.promote(ref[1], "m/x", 99.0, "fp")["reason"]
    with pytest.raises(ValueError, match="needs a registered model version"):
        registry.promote(ModelRef("x", "checkpoint", "/x.pt"), "m/x", 1.0, "fp")


def test_job_evaluates_a_new_candidate_and_promotes_only_if_better(two_runs, root):
    save_tiny(root / "tiny-seed1", seed=1)
    assert register(root / "tiny-seed1") == "2"
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    cmd = [sys.executable, "jobs/evaluate.py", "--config", "conf/local.yaml", "--promote", "--set", "spark.master=local[1]",
           "--set", "spark.driver_memory=1g"]
    for item in overrides(root, f"models:/{NAME}@candidate", 20):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluation of veclip-clip-test v2" in proc.stdout and "mean per-class recall" in proc.stdout
    assert "promotion:" in proc.stdout
    client = MlflowClient()
    v1, v2 = client.get_model_version(NAME, "1"), client.get_model_version(NAME, "2")
    assert v2.tags["eval.fingerprint"] == v1.tags["eval.fingerprint"]
    better = float(v2.tags["eval.coco-mini.i2t_r5"]) > float(v1.tags["eval.coco-mini.i2t_r5"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == ("2" if better else "1")


def test_promote_refuses_what_it_cannot_compare(root, make_cfg):
    cfg = make_cfg(*overrides(root, str(root / "clip"), 10))
    with pytest.raises(ValueError, match="needs a registered model"):
        run_evaluate(cfg, None, promote=True)
    cfg = make_cfg(*overrides(root, f"models:/{NAME}@candidate", 10), "eval.promote_metric=coco/r1")
    with pytest.raises(ValueError, match="choose one of: coco-mini/i2t_r1"):
        run_evaluate(cfg, None, promote=True)
