"""Evaluate a CLIP model: COCO/Flickr-style retrieval and zero-shot classification, results to MLflow.

    spark-submit jobs/evaluate.py --config conf/local.yaml --set eval.model=models:/veclip-clip@candidate
    python jobs/evaluate.py --set eval.model=work/checkpoints/step_00001000.pt --set eval.max_images=100
    python jobs/evaluate.py --set eval.model=models:/veclip-clip@candidate --promote

eval.model takes a registered model URI (models:/NAME@ALIAS or models:/NAME/VERSION), a training
checkpoint or its folder, an open_clip or Hugging Face CLIPModel folder, or an open_clip model name
with --set eval.weights=FILE. Prints the tables, writes a JSON (eval.output), logs the metrics to
this job's MLflow run and, for a registered version, sets them as tags on that version. --promote
moves the alias `champion` to the version when eval.promote_metric beats the champion's value.
The same job: `veclip evaluate ...` or `python -m veclip evaluate ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
