"""Ingest a crawl into Delta: accepted samples -> `bronze`, rejected ones -> `quarantine` with a reason.

    spark-submit jobs/ingest.py --config conf/local.yaml --set paths.root=DIR --set ingest.inputs=SHARD
    python jobs/ingest.py --set ingest.inputs='[/crawl/*.tar, /crawl/urls.csv]' --input more.tar
    python jobs/ingest.py --set ingest.inputs=/crawl --retry-quarantined   # retry timeouts, 5xx, cut shards

Inputs: img2dataset webdataset shards (.tar) or parquet, URL tables (parquet/CSV/JSONL, images are
downloaded) and VeCap JSON ({url: caption}). Re-running adds nothing; new files ingest only
themselves. Prints the accounting: read = bronze + quarantine + already_present + duplicate_in_input.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from veclip.cli import run_job  # noqa: E402


def add_args(parser):
    parser.add_argument("--input", action="append", default=[], metavar="PATH",
                        help="an input file, glob or folder, added to ingest.inputs (repeatable)")
    parser.add_argument("--retry-quarantined", action="store_true",
                        help="try again the samples quarantined for a transient reason (timeout, DNS, 5xx/429, "
                             "truncated, damaged file); same as --set ingest.retry_quarantined=true")


def run_ingest(cfg, spark, args):
    from veclip.ingest.stage import run_ingest as run
    return run(cfg, spark, args)


if __name__ == "__main__":
    sys.exit(run_job("ingest", run_ingest, __doc__, add_args))
