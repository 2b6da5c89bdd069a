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
