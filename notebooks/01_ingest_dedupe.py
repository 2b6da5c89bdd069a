# Databricks notebook source
# MAGIC %md
# MAGIC # 1 · Ingest and dedupe a crawl
# MAGIC
# MAGIC Reads the crawl named in `ingest.inputs` (img2dataset shards, parquet, URL tables or VeCap JSON)
# MAGIC into the `bronze` Delta table, rejected samples into `quarantine`, then groups exact and
# MAGIC near-duplicate images into `silver`. Both stages are incremental: rerunning adds only new samples.
# MAGIC
# MAGIC **Widgets**: `config` (profile, relative to the repo root) and `overrides` (`key=value; ...`).

# COMMAND ----------

# MAGIC %pip install -r ../requirements-databricks.txt --quiet

# COMMAND ----------

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the repository root: notebooks/ sits inside it

from veclip import notebook  # noqa: E402

cfg = notebook.widget_config(dbutils, "conf/databricks.yaml")
print("tables under:", cfg.tables.catalog, cfg.tables.schema_, "| inputs:", cfg.ingest.inputs)

# COMMAND ----------

# MAGIC %md ## Ingest: crawl → bronze + quarantine

# COMMAND ----------

ingest = notebook.run_stage("ingest", cfg, spark)

# COMMAND ----------

display(notebook.quarantine_reasons(cfg, spark))

# COMMAND ----------

# MAGIC %md ## Dedupe: bronze → silver (duplicate groups, canonical flag)

# COMMAND ----------

dedupe = notebook.run_stage("dedupe", cfg, spark)

# COMMAND ----------

from veclip.tables import Tables  # noqa: E402

silver = Tables(cfg, spark).read("silver")
display(silver.groupBy("is_canonical", "dup_rule").count().orderBy("is_canonical", "dup_rule"))
