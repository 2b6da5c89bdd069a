"""Config of the evaluate stage: which model, which benchmarks, where results go.

Relative dataset paths are resolved against the current working directory when the config loads
(like `paths.root`), so `../shared/data/coco-mini` means "beside the checkout" when a job runs
from the repository root.
"""

from __future__ import annotations

import os
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from veclip.config.base import Section

_KEYWORDS = {"imagenet", "openai", "simple"}


def _resolve(v: Optional[str]) -> Optional[str]:
    """Absolute local path (against the current directory); URIs, Volumes and keywords stay as given."""
    if v is None or v in _KEYWORDS or "://" in v or v.startswith("/Volumes"):
        return v
    return os.path.abspath(os.path.expanduser(v))


class RetrievalSet(Section):
    name: str = Field(..., description="Dataset name, used in metric keys (`<name>/i2t_r1`) and tables.")
    format: Literal["coco", "karpathy"] = Field(
        "coco", description="`coco`: COCO captions JSON (`images[]` + `annotations[]`); `karpathy`: the "
        "Karpathy-split JSON (`dataset_coco.json`, `dataset_flickr30k.json`) used for COCO 5k and Flickr30k 1k.")
    path: str = Field(..., description="The captions JSON file (relative paths: against the current directory).")
    images_dir: Optional[str] = Field(None, description="Folder of the images (default: `images/` beside a COCO "
                                      "JSON; the JSON's folder for Karpathy, joined with each image's `filepath`).")
    split: str = Field("test", description="Karpathy split to evaluate (`test` = COCO 5k / Flickr30k 1k). "
                       "Ignored for `coco`.")
    captions_per_image: Optional[int] = Field(5, ge=1, description="Keep the first N captions of each image "
                                              "(the standard protocol uses 5); null keeps all.")

    @field_validator("path", "images_dir")
    @classmethod
    def _local_paths(cls, v: Optional[str]) -> Optional[str]:
        return _resolve(v)


class ZeroShotSet(Section):
    name: str = Field(..., description="Dataset name, used in metric keys (`<name>/top1`) and tables.")
    format: Literal["parquet", "imagefolder", "imagenet"] = Field(
        "parquet", description="`parquet`: rows of (image bytes, integer label); `imagefolder`: one sub-folder "
        "per class, classes in sorted folder order; `imagenet`: an ImageFolder of the 1000 ImageNet synsets "
        "with open_clip's built-in class names.")
    path: str = Field(..., description="Parquet file or folder, or the ImageFolder root.")
    classnames: Optional[str] = Field(None, description="Class names: a text file (one per line, line i = "
                                      "label i) or JSON list; `imagenet` for open_clip's 1000 names; null: from "
                                      "the parquet's label-name column or the folder names.")
    templates: str = Field("openai", description="Prompt templates: `openai` (open_clip's 80 ImageNet "
                           "templates), `simple` (its 7), or a text file with one template per line "
                           "containing `{}` or `{c}`.")
    image_column: Optional[str] = Field(None, description="Parquet column of encoded image bytes (default: the "
                                        "first of jpeg, jpg, png, image, image_bytes, bytes).")
    label_column: str = Field("label", description="Parquet column of integer labels (0 .. classes-1).")
    label_name_column: Optional[str] = Field("label_name", description="Parquet column of class names, used "
                                             "when `classnames` is null.")

    @field_validator("path", "classnames", "templates")
    @classmethod
    def _local_paths(cls, v: Optional[str]) -> Optional[str]:
        return _resolve(v)


class EvalConfig(Section):
    model: Optional[str] = Field(
        None, description="The model to evaluate: `models:/NAME@ALIAS` or `models:/NAME/VERSION` (registered "
        "MLflow model), `@ALIAS` (of `eval.registered_model`), a training checkpoint `step_*.pt` or its "
        "folder (latest step), an open_clip model folder, a Hugging Face `CLIPModel` folder, or an open_clip "
        "model name with `eval.weights`. Null: `models:/<registered_model>@candidate`. Relative paths: against "
        "the current directory.")
    weights: Optional[str] = Field(None, description="Weights file (.pt / .safetensors) for an open_clip model "
                                   "name given as `eval.model`.")
    registered_model: str = Field("veclip-clip", description="Registered model name used by `@ALIAS` and by "
                                  "default (a three-level `catalog.schema.name` on Unity Catalog).")
    retrieval: list[RetrievalSet] = Field(default_factory=list, description="Image-text retrieval benchmarks "
                                          "(Recall@1/5/10 both ways).")
    zeroshot: list[ZeroShotSet] = Field(default_factory=list, description="Zero-shot classification benchmarks "
                                        "(top-1, top-5, mean per-class recall).")
    batch_size: int = Field(64, ge=1, description="Images or texts per forward pass.")
    max_images: Optional[int] = Field(None, ge=1, description="Evaluate an evenly spaced, deterministic subset "
                                      "of at most this many images per dataset (quick runs); null: all.")
    output: Optional[str] = Field(None, description="Results JSON path (default: "
                                  "<paths.root>/eval/<model>_<UTC time>.json).")
    promote_metric: Optional[str] = Field(None, description="Metric compared by `--promote`, e.g. "
                                          "`coco-mini/i2t_r1`; the alias `champion` moves to the evaluated "
                                          "version when it beats the champion's recorded value.")
    device: str = Field("auto", description="Torch device for the embeddings (`auto`: the first GPU, else CPU).")
    workers: int = Field(2, ge=1, description="Threads that decode and preprocess images.")

    @field_validator("output", "weights")
    @classmethod
    def _local_paths(cls, v: Optional[str]) -> Optional[str]:
        return _resolve(v)

    @model_validator(mode="after")
    def _unique_names(self) -> "EvalConfig":
        names = [s.name for s in self.retrieval] + [s.name for s in self.zeroshot]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names must be unique across eval.retrieval and eval.zeroshot "
                             f"(metric keys are <name>/<metric>): {', '.join(dup)}")
        return self

    @property
    def model_spec(self) -> str:
        if self.model is None:
            return f"models:/{self.registered_model}@candidate"
        if self.model.startswith("@"):
            return f"models:/{self.registered_model}{self.model}"
        return self.model
