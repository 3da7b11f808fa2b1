#!/usr/bin/env bash
# A Python virtual environment with torch, safetensors and numpy for the PyTorch golden check
# (scripts/torch_golden.py), at the folder given (default $HOME/.cache/mgr-venv), kept outside
# the clone. Installed once: a venv that already imports them is left as it is. PyPI's torch
# for Linux pulls the CUDA libraries it links against (about 5.4 GB, 4 minutes here); a
# CPU-only torch is not on PyPI. Prints the venv's python on stdout.
set -euo pipefail
venv="${1:-$HOME/.cache/mgr-venv}"
if ! "$venv/bin/python" -c "import torch, safetensors, numpy" 2>/dev/null; then
  echo "torch-venv.sh: installing torch, safetensors and numpy into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch safetensors numpy >&2
fi
echo "$venv/bin/python"
