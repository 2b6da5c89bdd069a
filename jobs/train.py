"""Train CLIP on the gold table (mixed VeCap/AltText text), log the run and register the model.

    spark-submit jobs/train.py --config conf/local.yaml --set paths.root=DIR
    spark-submit jobs/train.py --set paths.root=DIR --set train.num_processes=2   # TorchDistributor, 2 ranks
    python jobs/train.py --set paths.root=DIR --resume          # continue the latest run from its checkpoint

Reads a pinned version of `gold` (train.gold_version, latest when null) with petastorm straight from its
Parquet files; checkpoints to <paths.checkpoints_dir>/<run name>; logs params, the dataset version,
per-step metrics and a loss curve to MLflow; registers train.registered_model with alias `candidate`.
The same job: `veclip train ...` or `python -m veclip train ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
