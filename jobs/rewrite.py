"""The main job: crawl -> bronze -> silver -> captions -> VeCap -> gold, each stage skipping finished work.

    spark-submit jobs/rewrite.py --config conf/local.yaml --set paths.root=./work \
        --set ingest.inputs='../shared/data/cc12m-sample/*.tar' --set caption.model=./work/models/tiny-llava
    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite,gold   # a subset

Prints each stage's accounting, logs one MLflow run (counts, timings, table versions, model ids,
prompt file, HTML gallery of samples) and exits non-zero if any accounting does not add up.
The same job: `veclip rewrite ...` or `python -m veclip rewrite ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["rewrite", *sys.argv[1:]]))
