"""The CLIP model being trained: built by name, optionally initialised from weights, saved as a folder.

    built = build("veclip-tiny", image_size=None)          # model + what the data pipeline needs
    load_weights(built.model, "/path/step_00001000.pt")     # a checkpoint, open_clip folder or weights file
    save_folder(built.model, "veclip-tiny", built.image_size, "/tmp/clip")   # veclip.clip folder format

Any open_clip model name works (ViT-B-16 is the paper's setting) as do the CPU configs in
veclip/clip_configs/. With `image_size` different from the model's, open_clip resizes the
positional embedding (`force_image_size`) and the saved folder's config says the trained size.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from veclip import clip

log = logging.getLogger(__name__)


@dataclass
class Built:
    model: torch.nn.Module
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    context_length: int


def native_image_size(name: str) -> int:
    size = clip.model_config(name)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else int(size[0])


def build(name: str, image_size: Optional[int] = None) -> Built:
    """A randomly initialised model (seed torch first for a reproducible init)."""
    import open_clip

    native = native_image_size(name)
    force = image_size if image_size and image_size != native else None
    model = open_clip.create_model(name, force_image_size=force)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = force or native
    context = getattr(model, "context_length", None) or clip.model_config(name)["text_cfg"].get("context_length", 77)
    return Built(model, size, tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                 tuple(pre.get("std", open_clip.OPENAI_DATASET_STD)), int(context))


def _state_dict(path: Path) -> dict:
    from safetensors.torch import load_file

    if path.is_dir():
        weights = path / "open_clip_model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"train.pretrained={path}: folder without open_clip_model.safetensors")
        return load_file(str(weights))
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):  # our checkpoints, open_clip_train's checkpoints
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Initialise `model` from a training checkpoint, an open_clip folder or a weights file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"train.pretrained={path}: no such file or folder")
    state = {k.removeprefix("module."): v for k, v in _state_dict(p).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"train.pretrained={path} does not fit the model: {str(e)[:500]}") from None
    log.info("initial weights from %s", path)


def save_folder(model: torch.nn.Module, name: str, image_size: int, folder: str | os.PathLike) -> Path:
    """The veclip.clip folder (open_clip format); records a non-native training image size in its config."""
    out = clip.save(model, name, folder)
    if image_size != native_image_size(name):
        cfg_path = out / "open_clip_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["model_cfg"]["vision_cfg"]["image_size"] = image_size
        cfg.setdefault("preprocess_cfg", {})["size"] = image_size
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out
