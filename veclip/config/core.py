"""Sections shared by every stage: where things live, Spark, MLflow."""

from __future__ import annotations

import os
from typing import Optional

from pydantic import Field, field_validator

from veclip.config.base import Section


class PathsConfig(Section):
    root: str = Field("./work", description="Root directory for everything the pipeline writes locally "
                      "(Delta tables, MLflow store, checkpoints, model caches). Relative to the working directory.")
    models: Optional[str] = Field(None, description="Cache for prepared model copies (default: <root>/models). "
                                  "On Databricks a Unity Catalog Volume path.")
    checkpoints: Optional[str] = Field(None, description="Training checkpoints (default: <root>/checkpoints).")

    @field_validator("root")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Resolved once at load time so every process (driver, workers, TorchDistributor ranks) agrees.
        return v if "://" in v or v.startswith("/Volumes") else os.path.abspath(os.path.expanduser(v))

    @property
    def models_dir(self) -> str:
        return self.models or os.path.join(self.root, "models")

    @property
    def checkpoints_dir(self) -> str:
        return self.checkpoints or os.path.join(self.root, "checkpoints")


class TablesConfig(Section):
    catalog: Optional[str] = Field(None, description="Unity Catalog catalog. With `schema` set, tables are "
                                   "metastore tables `catalog.schema.<name>` instead of Delta directories under paths.root.")
    schema_: Optional[str] = Field(None, alias="schema", description="Schema (database) for metastore tables.")
    prefix: str = Field("", description="Prefix added to every table name (e.g. `dev_`), to keep several "
                        "pipelines side by side in one schema or root.")

    model_config = Section.model_config | {"populate_by_name": True}


class SparkConfig(Section):
    master: str = Field("local[*]", description="Spark master for a locally built session. Ignored when a "
                        "session already exists (Databricks, spark-submit --master).")
    app_name: str = Field("veclip", description="Spark application name.")
    log_level: str = Field("WARN", description="Spark log level (ERROR, WARN, INFO).")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions for a locally built session.")
    driver_memory: str = Field("4g", description="spark.driver.memory for a locally built session.")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings for a locally built session.")


class MlflowConfig(Section):
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: sqlite:///<root>/mlflow.db; "
                                        "`databricks` on a cluster).")
    registry_uri: Optional[str] = Field(None, description="Model registry URI (default: the tracking URI; "
                                        "`databricks-uc` for Unity Catalog).")
    experiment: str = Field("veclip", description="Experiment name (a workspace path such as /Shared/veclip on Databricks).")
    enabled: bool = Field(True, description="Log runs to MLflow. Off only for debugging.")
