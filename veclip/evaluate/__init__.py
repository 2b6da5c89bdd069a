"""Zero-shot evaluation of CLIP models: image-text retrieval and zero-shot classification.

    spark-submit jobs/evaluate.py --config conf/local.yaml --set eval.model=models:/veclip-clip@candidate
    from veclip.evaluate.stage import run_evaluate

Modules: metrics (ranks, recalls, top-K; pure), datasets (COCO / Karpathy captions), labelled
(parquet, ImageFolder, class names), model_ref (what a model spec names), models (every model source
-> one encoder), embed (batched embeddings), retrieval, zeroshot, report (table, JSON), registry (MLflow
run, version tags, `champion`), stage (run_evaluate).
"""
