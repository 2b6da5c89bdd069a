"""Train CLIP on the gold table (mixed VeCap/AltText text), log the run and register the model.

    spark-submit jobs/train.py --config conf/local.yaml --set paths.root=DIR
    spark-submit jobs/train.py --set paths.root=DIR --set train.num_processes=2   # TorchDistributor, 2 ranks
    python jobs/train.py --set paths.root=DIR --resume          # continue the latest run from its checkpoint

Reads a pinned version of `gold` (train.gold_version, latest when null) with petastorm straight from its
Parquet files; checkpoints to <paths.checkpoints_dir>/<run name>; logs params, the dataset version,
per-step metrics and a loss curve to MLflow; registers train.registered_model with alias `candidate`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from veclip.cli import run_job  # noqa: E402
from veclip.train.stage import run_train  # noqa: E402


def add_args(p):
    p.add_argument("--resume", action="store_true",
                   help="continue the run named by train.run_name (default: the latest run) from its "
                        "latest checkpoint, on the same gold version and with the same data order")


if __name__ == "__main__":
    sys.exit(run_job("train", run_train, __doc__, add_args))
