"""CLIP training on the gold table: petastorm reader -> open_clip model (DDP) -> checkpoints -> MLflow.

    spark-submit jobs/train.py --config conf/local.yaml --set paths.root=DIR [--resume]

Parts: mixing (text choice), samples (worker-side decode/crop/tokenise), data (pinned gold version,
per-rank petastorm stream, row counting), optim (param groups, LR schedule), checkpoint, logger
(rank-0 MLflow metrics), loop (train / train_step), launch (TorchDistributor or one process),
model_export (MLflow pyfunc + registry), stage (the job's stage function).
"""
