"""Ingest: crawl files (webdataset shards, img2dataset parquet, URL tables, VeCap JSON) -> bronze + quarantine.

    from veclip.ingest import sample_key, run_ingest
    run_ingest(cfg, spark)                       # or: spark-submit jobs/ingest.py --set ingest.inputs=PATH

Modules: inputs (driver: list files, detect formats), webdataset / readers (one file -> samples),
fetch (HTTP downloads), images (validate bytes), text (clean AltText), records (key and row of a
sample), tasks (what Spark tasks run), ledger (files already ingested), stage (the stage itself).
`sample_key` is the stable id of a sample: see veclip.ingest.records.
"""

from veclip.ingest.records import sample_key

__all__ = ["sample_key", "run_ingest"]


def __getattr__(name):
    # Imported lazily: Spark tasks import this package and need none of the driver's Spark code.
    if name == "run_ingest":
        from veclip.ingest.stage import run_ingest
        return run_ingest
    raise AttributeError(name)
