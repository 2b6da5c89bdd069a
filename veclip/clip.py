"""CLIP models: any open_clip architecture by name, saved and loaded in open_clip's folder format.

    model, preprocess_train, preprocess_val, tokenizer = create("ViT-B-16")     # paper setting
    model, ... = create("veclip-tiny")          # CPU-sized configs in veclip/clip_configs/*.json
    save(model, "veclip-tiny", "/tmp/clip")      # open_clip_config.json + open_clip_model.safetensors
    model, preprocess_val, tokenizer = load("/tmp/clip")

The folder is exactly what `open_clip.create_model_and_transforms("local-dir:/tmp/clip")` reads,
so a model trained here loads in any open_clip code, and the MLflow model wraps the same folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import open_clip
import torch

CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registered = False


def register_configs() -> None:
    """Make the JSON configs in veclip/clip_configs/ known to open_clip by their file names."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def model_config(name: str) -> dict:
    register_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown CLIP model '{name}': not an open_clip model name nor a config in "
                         f"{CONFIG_DIR} (known: {', '.join(open_clip.list_models()[:8])}, ...)")
    return cfg


def create(name: str, pretrained: Optional[str] = None, device: str | torch.device = "cpu",
           precision: str = "fp32", aug_cfg: Optional[dict] = None):
    """(model, preprocess_train, preprocess_val, tokenizer); random init unless `pretrained` is a weights path."""
    model_config(name)  # clear error for an unknown name
    model, pre_train, pre_val = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, precision=precision, aug_cfg=aug_cfg or {})
    return model, pre_train, pre_val, open_clip.get_tokenizer(name)


def save(model: torch.nn.Module, name: str, path: str | os.PathLike) -> Path:
    """Write the open_clip folder format: config (with preprocessing) and safetensors weights."""
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    save_config_for_hf(model, out / "open_clip_config.json", model_config=model_config(name))
    with open(out / "veclip.json", "w") as f:
        json.dump({"model_name": name}, f)
    return out


def load(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, preprocess_val, tokenizer) from a folder written by `save` (or open_clip)."""
    path = Path(path)
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{path} is not an open_clip model folder (no open_clip_config.json)")
    model, _, pre_val = open_clip.create_model_and_transforms(f"local-dir:{path}", device=device)
    model.eval()
    return model, pre_val, open_clip.get_tokenizer(f"local-dir:{path}")
