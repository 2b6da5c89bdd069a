# Databricks notebook source
# MAGIC %md
# MAGIC # 2 · Caption and rewrite: from AltText to VeCap
# MAGIC
# MAGIC Captions every canonical image with the configured VLM (`caption.model`, the paper's prompt),
# MAGIC fuses AltText and caption into a VeCap with the configured LLM (`rewrite.model`), and builds the
# MAGIC `gold` training table. On a GPU cluster each Spark task uses the GPU it was given; both stages
# MAGIC resume where they stopped.

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
print("captioner:", cfg.caption.model, "| rewriter:", cfg.rewrite.model)

# COMMAND ----------

caption = notebook.run_stage("caption", cfg, spark, retry_errors=False)

# COMMAND ----------

rewrite = notebook.run_stage("rewrite", cfg, spark, retry_errors=False)

# COMMAND ----------

gold = notebook.run_stage("gold", cfg, spark)

# COMMAND ----------

# MAGIC %md ## Error and fallback rates

# COMMAND ----------

display(notebook.generation_rates(cfg, spark))

# COMMAND ----------

# MAGIC %md ## Samples: thumbnail, AltText, caption, VeCap

# COMMAND ----------

displayHTML(notebook.samples_html(cfg, spark, n=24))
