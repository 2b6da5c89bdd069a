"""Typed pipeline config: YAML profiles in conf/, validated, with `--set dotted.key=value` overrides.

    cfg = load_config("conf/local.yaml", ["paths.root=/tmp/x", "ingest.inputs=/data/*.tar"])
    cfg = load_config(None, ["paths.root=/tmp/x"])             # the embedded local profile
    cfg = load_config(None, ["paths.root=/tmp/x"], bare=True)  # the code's defaults, no profile

Precedence: `--set` > file > defaults. With no file the embedded local profile applies
(`LOCAL_PROFILE`, shipped in the package as veclip/conf/local.yaml; the checkout's conf/local.yaml
links to it). An unknown or mistyped key is a `ConfigError` naming the key
and the file. Each stage receives only its own section (`cfg.ingest`, `cfg.caption`, ...). Derived
values (table locations, MLflow URI) are computed from the config, never written back into it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import yaml
from pydantic import Field, ValidationError

from veclip.config.base import Section
from veclip.config.caption import CaptionConfig
from veclip.config.core import MlflowConfig, PathsConfig, SparkConfig, TablesConfig
from veclip.config.dedupe import DedupeConfig
from veclip.config.evaluate import EvalConfig
from veclip.config.gold import GoldConfig
from veclip.config.ingest import IngestConfig
from veclip.config.rewrite import RewriteConfig
from veclip.config.train import TrainConfig

__all__ = ["Config", "ConfigError", "LOCAL_PROFILE", "load_config", "flatten"]

# The embedded default profile: local Spark + Delta directories + SQLite MLflow under paths.root.
LOCAL_PROFILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "local.yaml")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


class Config(Section):
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Where the pipeline writes.")
    tables: TablesConfig = Field(default_factory=TablesConfig, description="Delta directories or metastore tables.")
    spark: SparkConfig = Field(default_factory=SparkConfig, description="Local Spark session.")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="Tracking and registry.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Crawl -> bronze.")
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig, description="Bronze -> silver.")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="Silver -> captions.")
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig, description="Captions -> vecap.")
    gold: GoldConfig = Field(default_factory=GoldConfig, description="Training table.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="CLIP training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Zero-shot evaluation.")

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{os.path.join(self.paths.root, 'mlflow.db')}"

    @property
    def mlflow_registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.mlflow_tracking_uri


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    # YAML parsing gives numbers, booleans, null and [lists] their types; plain text stays a string.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _apply(tree: dict, path: list[str], value: Any, source: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{'.'.join(path)}' goes through '{part}', which is not a section")
        node = child
    node[path[-1]] = value


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: '{key}': {e['msg']} (got {e.get('input')!r})")
    return "invalid config\n  " + "\n  ".join(lines)


def load_config(path: Optional[str] = None, overrides: Iterable[str] = (), *, bare: bool = False) -> Config:
    """Read a YAML profile, apply `--set` overrides, validate.

    `path` None reads the embedded local profile (`LOCAL_PROFILE`); with `bare=True` (and no path)
    no file is read: the overrides apply to the code's defaults.
    """
    if bare and path is not None:
        raise ValueError("load_config: bare=True reads no file; pass path=None")
    if path is None and not bare:
        path = LOCAL_PROFILE
    tree: dict = {}
    source = path or "<defaults>"
    if path is not None:
        if not os.path.exists(path):
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            try:
                tree = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    overrides = list(overrides)
    for item in overrides:
        keys, value = _parse_override(item)
        _apply(tree, keys, value, f"--set {item}")
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        src = source if not overrides else f"{source} (with --set {' '.join(overrides)})"
        raise ConfigError(_describe(e, src)) from None


def flatten(cfg: Section, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value, for logging the resolved config as MLflow params."""
    out: dict[str, Any] = {}
    for name, value in cfg:
        key = f"{prefix}{name}"
        if isinstance(value, Section):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out
