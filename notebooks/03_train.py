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

# MAGIC %pip install --no-deps .. --quiet

# COMMAND ----------

# veclip is installed above like any library, with --no-deps (the runtime has Spark, Delta, MLflow and
# torch; requirements-databricks.txt adds what it lacks). `..` is this repository as a Databricks Git
# folder (pip builds and installs it). From a wheel instead (`make wheel`, copied to a Unity Catalog
# volume), that cell reads
# `%pip install --no-deps /Volumes/<catalog>/<schema>/<volume>/veclip-<version>-py3-none-any.whl`.
dbutils.library.restartPython()

# COMMAND ----------

from veclip import notebook

cfg = notebook.widget_config(dbutils, "conf/databricks.yaml")
print(f"model {cfg.train.model} | p_vecap {cfg.train.p_vecap} | mode {cfg.train.mode} "
      f"x {cfg.train.num_processes} | registered as {cfg.train.registered_model}")

# COMMAND ----------

train = notebook.run_stage("train", cfg, spark, resume=False)
