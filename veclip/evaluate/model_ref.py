"""What an evaluation's model spec names, before anything is loaded (shared by `models` and `registry`).

    ModelRef("models:/veclip-clip@candidate", "hf", "/tmp/.../clip", name="veclip-clip", version="3")
    folder_kind("/models/clip")   # -> "open_clip" | "hf" | None
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelRef:
    """Where a model comes from; `name`/`version` are set for a registered MLflow model."""
    spec: str
    kind: str                    # mlflow | checkpoint | open_clip | hf | name
    path: Optional[str] = None   # local checkpoint file or model folder
    weights: Optional[str] = None
    name: Optional[str] = None
    version: Optional[str] = None
    run_id: Optional[str] = None
    model_id: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.name:
            return f"{self.name} v{self.version}"
        return os.path.basename(str(self.path or self.spec).rstrip("/")) or self.spec

    def describe(self) -> dict:
        out = {"spec": self.spec, "kind": self.kind, "path": self.path, "weights": self.weights,
               "registered_model": self.name, "version": self.version, "run_id": self.run_id,
               "model_id": self.model_id}
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


def folder_kind(path: str) -> Optional[str]:
    """The kind of model folder `path` is: `open_clip` (open_clip_config.json), `hf` (config.json), or None."""
    if os.path.isfile(os.path.join(path, "open_clip_config.json")):
        return "open_clip"
    if os.path.isfile(os.path.join(path, "config.json")):
        return "hf"
    return None
