"""The main job: crawl -> bronze -> silver -> captions -> VeCap -> gold, each stage skipping finished work.

    spark-submit jobs/rewrite.py --config conf/local.yaml --set paths.root=./work \
        --set ingest.inputs='../shared/data/cc12m-sample/*.tar' --set caption.model=./work/models/tiny-llava
    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite,gold   # a subset

Prints each stage's accounting, logs one MLflow run (counts, timings, table versions, model ids,
prompt file, HTML gallery of samples) and exits non-zero if any accounting does not add up.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from veclip.cli import run_job  # noqa: E402
from veclip.pipeline import STAGE_NAMES, run_pipeline  # noqa: E402


def add_args(p):
    p.add_argument("--stages", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   help=f"comma-separated subset of {','.join(STAGE_NAMES)} (default: all, in order)")
    p.add_argument("--retry-errors", action="store_true",
                   help="caption and rewrite again the rows that failed before")
    p.add_argument("--retry-quarantined", action="store_true",
                   help="ingest again the samples quarantined for a transient reason (timeout, 5xx, cut shard)")


if __name__ == "__main__":
    sys.exit(run_job("rewrite", run_pipeline, __doc__, add_args, lock=False))  # locked stage by stage
