# Databricks notebook source
# MAGIC %md
# MAGIC # 3 · Train CLIP on the VeCap/AltText mix
# MAGIC
# MAGIC Streams a pinned version of the `gold` table with petastorm into an open_clip trainer launched by
# MAGIC TorchDistributor (`train.mode: cluster` uses the cluster's GPU workers; `local` runs N processes on
# MAGIC the driver). Per sample the text is the VeCap with probability `train.p_vecap`, else the AltText.
# MAGIC The run, its dataset version, the loss curve and the model (registered as
# MAGIC `train.registered_model`, alias `candidate`) land in MLflow.

# COMMAND ----------

# MAGIC %pip install -r ../requirements-databricks.txt --quiet

# COMMAND ----------

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from veclip import notebook  # noqa: E402

cfg = notebook.widget_config(dbutils, "conf/databricks.yaml")
print(f"model {cfg.train.model} | p_vecap {cfg.train.p_vecap} | mode {cfg.train.mode} "
      f"x {cfg.train.num_processes} | registered as {cfg.train.registered_model}")

# COMMAND ----------

train = notebook.run_stage("train", cfg, spark, resume=False)
