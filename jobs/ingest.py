"""Ingest a crawl into Delta: accepted samples -> `bronze`, rejected ones -> `quarantine` with a reason.

    spark-submit jobs/ingest.py --config conf/local.yaml --set paths.root=DIR --set ingest.inputs=SHARD
    python jobs/ingest.py --set ingest.inputs='[/crawl/*.tar, /crawl/urls.csv]' --input more.tar
    python jobs/ingest.py --set ingest.inputs=/crawl --retry-quarantined   # retry timeouts, 5xx, cut shards

Inputs: img2dataset webdataset shards (.tar) or parquet, URL tables (parquet/CSV/JSONL, images are
downloaded) and VeCap JSON ({url: caption}). Re-running adds nothing; new files ingest only
themselves. Prints the accounting: read = bronze + quarantine + already_present + duplicate_in_input.
The same job: `veclip ingest ...` or `python -m veclip ingest ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
