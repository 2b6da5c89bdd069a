#!/usr/bin/env bash
# Optional data for the demo and its tests: Fashion-MNIST from the Debian package dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist). Installed when missing and apt-get can run (as root, or with
# password-less sudo); otherwise a note, and the tests that need it skip with the same command.
set -uo pipefail
FMNIST="${VECLIP_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
[[ -f "$FMNIST/train-images-idx3-ubyte.gz" ]] && exit 0
CMD="apt-get install -y dataset-fashion-mnist"
if [[ $(id -u) -ne 0 ]]; then
  sudo -n true 2>/dev/null || { echo "[setup] note: Fashion-MNIST missing; for the demo run: sudo $CMD" >&2; exit 0; }
  CMD="sudo $CMD"
fi
echo "[setup] installing Fashion-MNIST: $CMD"
$CMD >/dev/null 2>&1 || echo "[setup] note: '$CMD' failed; the demo needs it, its tests skip" >&2
exit 0
