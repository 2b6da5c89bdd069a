"""Retrying quarantined samples whose failure may pass (`--retry-quarantined`), and forgetting their
quarantine rows once they are ingested.

    retryable = transient_rows(tables, "ingest", version)     # quarantine rows a retry reads again
    forget_recovered(tables, "ingest", retryable, produced, read_sources)

Transient reasons: a download that timed out (`timeout`, the DNS lookup included), failed to
resolve (`dns_error`) or to connect (`connection_error`), was cut short (`truncated`, also a shard
member cut by the end of a half-copied file) or was refused for now (`http_429`, `http_5xx`), and
the placeholder rows of a damaged file (`truncated_shard`, `corrupt_shard`, `corrupt_source`,
`reader_error`). Any other reason (`http_404`, `not_an_image`, `too_small`, ...) is final.

A retried key that fails again keeps its quarantine row, updated with the new reason. A retried key
that reaches bronze loses its quarantine row (a Delta delete). A retried row of a file read again in
this run that the read did not produce again is replaced by what the read found: the placeholder
of damage that is gone (`@<offset>`), or a sample cut before its `.json` (keyed by shard and id, not
yet by URL) that is now read whole under its URL key. So every input row stays in exactly one of
bronze and quarantine.
"""

from __future__ import annotations

import re
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from veclip.ingest.ledger import SOURCE_DAMAGE
from veclip.tables import Tables

TRANSIENT = frozenset({"timeout", "dns_error", "connection_error", "truncated", "http_429", *SOURCE_DAMAGE})
_HTTP_5XX = r"^http_5[0-9][0-9]$"


def is_transient(reason: Optional[str]) -> bool:
    """Whether a quarantine reason may pass on a later try (see the module docstring)."""
    return reason is not None and (reason in TRANSIENT or re.match(_HTTP_5XX, reason) is not None)


def transient(reason: Column) -> Column:
    """The Spark form of `is_transient`."""
    return reason.isin(sorted(TRANSIENT)) | reason.rlike(_HTTP_5XX)


def transient_rows(tables: Tables, stage: str, version: Optional[int] = None) -> Optional[DataFrame]:
    """(key, source, source_key) of the stage's quarantine rows with a transient reason, as of `version`
    (pinned, so that the rows this run writes do not change the answer); None without a quarantine."""
    if not tables.exists("quarantine"):
        return None
    q = tables.read("quarantine", version)
    return q.where((F.col("stage") == stage) & transient(F.col("reason"))).select("key", "source", "source_key")


def forget_recovered(tables: Tables, stage: str, retryable: DataFrame, produced: DataFrame,
                     read_sources: set[str]) -> int:
    """Delete the quarantine rows of retried keys now in bronze, and those of files read again that the
    read did not produce again (see the module docstring). Returns the rows deleted."""
    in_bronze = retryable.join(tables.read("bronze").select("key"), on="key", how="left_semi")
    gone = (retryable.where(F.col("source").isin(sorted(read_sources)))
            .join(produced.select("key"), on="key", how="left_anti"))
    keys = in_bronze.select("key").unionByName(gone.select("key")).distinct().withColumn("stage", F.lit(stage))
    return tables.delete("quarantine", keys, ["key", "stage"]).deleted
