"""The trained model in MLflow: a pyfunc that embeds images and texts, registered with alias `candidate`.

    version = export(final_checkpoint, workdir, "veclip-clip", example_image)    # inside the job's run
    model = mlflow.pyfunc.load_model("models:/veclip-clip@candidate")
    out = model.predict(pd.DataFrame({"image": [jpeg_bytes, None], "text": [None, "a dog"]}))
    out["image_embedding"][0], out["text_embedding"][1]       # L2-normalised float lists (or None)

The model's artifact `clip` is the open_clip folder written by veclip.clip.save, so after
`mlflow.artifacts.download_artifacts("models:/NAME@ALIAS")` the weights are in `<download>/artifacts/clip`
and load with `veclip.clip.load` or `open_clip.create_model_and_transforms("local-dir:...")`.
Each version is tagged with the checkpoint it came from (training run, step, file sha256), and a
checkpoint is registered once: resuming a finished run returns the existing version.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ALIAS = "candidate"
# Tags on every registered version: which checkpoint it is (export registers a checkpoint once).
TAG_RUN, TAG_STEP, TAG_SHA256 = "veclip.train_run", "veclip.checkpoint_step", "veclip.checkpoint_sha256"
ARTIFACT = "clip"
BATCH = 64


class ClipEmbedder(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame(image: bytes|None, text: str|None) -> DataFrame(image_embedding, text_embedding)."""

    def load_context(self, context) -> None:
        from veclip import clip

        self.model, self.preprocess, self.tokenizer = clip.load(context.artifacts[ARTIFACT])

    def _images(self, blobs: list) -> list[Optional[list[float]]]:
        import torch
        from PIL import Image

        out: list[Optional[list[float]]] = [None] * len(blobs)
        idx = [i for i, b in enumerate(blobs) if b is not None and len(b) > 0]
        for start in range(0, len(idx), BATCH):
            part = idx[start:start + BATCH]
            pixels = torch.stack([self.preprocess(Image.open(io.BytesIO(bytes(blobs[i]))).convert("RGB"))
                                  for i in part])
            with torch.inference_mode():
                emb = torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)
            for i, e in zip(part, emb.tolist()):
                out[i] = e
        return out

    def _texts(self, texts: list) -> list[Optional[list[float]]]:
        import torch

        out: list[Optional[list[float]]] = [None] * len(texts)
        idx = [i for i, t in enumerate(texts) if isinstance(t, str)]
        for start in range(0, len(idx), BATCH):
            part = idx[start:start + BATCH]
            with torch.inference_mode():
                emb = torch.nn.functional.normalize(
                    self.model.encode_text(self.tokenizer([texts[i] for i in part])), dim=-1)
            for i, e in zip(part, emb.tolist()):
                out[i] = e
        return out

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        n = len(model_input)
        images = list(model_input["image"]) if "image" in model_input else [None] * n
        texts = list(model_input["text"]) if "text" in model_input else [None] * n
        images = [None if b is None or (isinstance(b, float) and np.isnan(b)) else b for b in images]
        return pd.DataFrame({"image_embedding": self._images(images), "text_embedding": self._texts(texts)})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image", required=False), ColSpec("string", "text", required=False)]),
        outputs=Schema([ColSpec(Array("float"), "image_embedding", required=False),
                        ColSpec(Array("float"), "text_embedding", required=False)]))


def _requirements() -> list[str]:
    names = ["torch", "torchvision", "open_clip_torch", "pillow", "pandas", "numpy", "safetensors", "mlflow"]
    return [f"{n}=={metadata.version(n)}" for n in names]


def checkpoint_identity(checkpoint: str, step: int) -> dict[str, str]:
    """Tags that name one checkpoint: training run (its folder), step and the file's sha256."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {TAG_RUN: Path(checkpoint).parent.name, TAG_STEP: str(step), TAG_SHA256: digest.hexdigest()}


def registered_version(registered_model: str, identity: dict[str, str]) -> Optional[str]:
    """The version of `registered_model` already registered for this checkpoint, if any (the oldest)."""
    client = mlflow.MlflowClient()
    found, token = [], None
    while True:  # tags are compared here, not in the filter: Unity Catalog filters on name only
        page = client.search_model_versions(f"name='{registered_model}'", page_token=token)
        found += [v.version for v in page if all(v.tags.get(k) == val for k, val in identity.items())]
        token = page.token
        if not token:
            break
    return str(min(found, key=int)) if found else None


def log_and_register(clip_folder: str, registered_model: str, example_image: bytes,
                     example_text: str, tags: Optional[dict[str, str]] = None) -> str:
    """Log the pyfunc into the active run, register a new version (with `tags`), point `candidate` at it."""
    import veclip

    example = pd.DataFrame({"image": [example_image], "text": [example_text]})
    info = mlflow.pyfunc.log_model(
        name="model", python_model=ClipEmbedder(), artifacts={ARTIFACT: clip_folder},
        signature=signature(), input_example=example, pip_requirements=_requirements(),
        code_paths=[os.path.dirname(veclip.__file__)])  # the model loads without veclip installed
    # Registered with its tags in one call: no version without its checkpoint identity.
    version = str(mlflow.register_model(info.model_uri, registered_model, tags=tags or {}).version)
    mlflow.MlflowClient().set_registered_model_alias(registered_model, ALIAS, version)
    log.info("registered %s version %s with alias %s", registered_model, version, ALIAS)
    return version


def export(checkpoint: str, registered_model: str, example_image: bytes, example_text: str) -> str:
    """Final checkpoint -> open_clip folder -> registered MLflow model version (alias `candidate`).

    Idempotent: a checkpoint already registered (same training run, step and file sha256, e.g. a
    finished run resumed again) returns its existing version; nothing is logged or registered and
    `candidate` is not moved (it may point at a newer model by now).
    """
    from veclip.train.checkpoint import load_file
    from veclip.train.model import build, save_folder

    state = load_file(checkpoint)
    identity = checkpoint_identity(checkpoint, int(state.get("step", -1)))
    existing = registered_version(registered_model, identity)
    if existing is not None:
        log.info("%s step %s is already %s version %s: not registered again", checkpoint,
                 identity[TAG_STEP], registered_model, existing)
        return existing
    built = build(state["model_name"], state.get("image_size"))
    built.model.load_state_dict(state["model"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_folder(built.model, state["model_name"], built.image_size, Path(tmp) / ARTIFACT)
        return log_and_register(str(folder), registered_model, example_image, example_text, identity)


def loss_curve(history: dict, path: str) -> str:
    """PNG of the training loss (and learning rate) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps, loss = zip(*history["loss"]) if history.get("loss") else ((), ())
    ax.plot(steps, loss, color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    if history.get("lr"):
        lr_ax = ax.twinx()
        lr_ax.plot(*zip(*history["lr"]), color="tab:orange", alpha=0.6, label="learning rate")
        lr_ax.set_ylabel("learning rate")
    ax.set_title("CLIP training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
