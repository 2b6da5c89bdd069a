"""The trained model in MLflow: a pyfunc that embeds images and texts, registered with alias `candidate`.

    version = export(final_checkpoint, workdir, "veclip-clip", example_image)    # inside the job's run
    model = mlflow.pyfunc.load_model("models:/veclip-clip@candidate")
    out = model.predict(pd.DataFrame({"image": [jpeg_bytes, None], "text": [None, "a dog"]}))
    out["image_embedding"][0], out["text_embedding"][1]       # L2-normalised float lists (or None)

The model's artifact `clip` is the open_clip folder written by veclip.clip.save, so after
`mlflow.artifacts.download_artifacts("models:/NAME@ALIAS")` the weights are in `<download>/artifacts/clip`
and load with `veclip.clip.load` or `open_clip.create_model_and_transforms("local-dir:...")`.
"""

from __future__ import annotations

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


def log_and_register(clip_folder: str, registered_model: str, example_image: bytes,
                     example_text: str) -> str:
    """Log the pyfunc into the active run, register a new version, point `candidate` at it; the version."""
    import veclip

    example = pd.DataFrame({"image": [example_image], "text": [example_text]})
    info = mlflow.pyfunc.log_model(
        name="model", python_model=ClipEmbedder(), artifacts={ARTIFACT: clip_folder},
        signature=signature(), input_example=example, pip_requirements=_requirements(),
        code_paths=[os.path.dirname(veclip.__file__)],  # the model loads without veclip installed
        registered_model_name=registered_model)
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(registered_model, ALIAS, version)
    log.info("registered %s version %s with alias %s", registered_model, version, ALIAS)
    return version


def export(checkpoint: str, registered_model: str, example_image: bytes, example_text: str) -> str:
    """Final checkpoint -> open_clip folder -> registered MLflow model version (alias `candidate`)."""
    from veclip.train.checkpoint import load_file
    from veclip.train.model import build, save_folder

    state = load_file(checkpoint)
    built = build(state["model_name"], state.get("image_size"))
    built.model.load_state_dict(state["model"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_folder(built.model, state["model_name"], built.image_size, Path(tmp) / ARTIFACT)
        return log_and_register(str(folder), registered_model, example_image, example_text)


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
