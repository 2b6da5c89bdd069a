# Databricks notebook source
# MAGIC %md
# MAGIC # 4 · Evaluate, compare with the champion, promote
# MAGIC
# MAGIC Zero-shot classification and image–text retrieval (standard protocols) of the model named in
# MAGIC `eval.model` (default: the `candidate` alias of the registered model). Metrics are logged to an
# MAGIC MLflow run and set as tags on the model version; with the `promote` widget set to `yes`, the
# MAGIC alias `champion` moves to this version when `eval.promote_metric` beats the current champion.

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
dbutils.widgets.dropdown("promote", "no", ["no", "yes"], "Promote to champion")
promote = dbutils.widgets.get("promote") == "yes"
print("evaluating", cfg.eval.model, "| promote:", promote)

# COMMAND ----------

evaluation = notebook.run_stage("evaluate", cfg, spark, promote=promote)
