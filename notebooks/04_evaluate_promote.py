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

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from veclip import notebook  # noqa: E402

cfg = notebook.widget_config(dbutils, "conf/databricks.yaml")
dbutils.widgets.dropdown("promote", "no", ["no", "yes"], "Promote to champion")
promote = dbutils.widgets.get("promote") == "yes"
print("evaluating", cfg.eval.model, "| promote:", promote)

# COMMAND ----------

evaluation = notebook.run_stage("evaluate", cfg, spark, promote=promote)
