#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: installs torch 2.13.0's CUDA build in a venv of its own, runs
# the test suite's device-marked tests (tests/test_device.py: no host sync inside a training step, exact
# resume with the GPU's random states) and a 200-step five-task training with its throughput. About 10
# minutes, most of it the install. On a machine without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu_smoke.sh            # MTBERT_DATA=... if the data is not in ../shared/data
#   CUDA_WHEELS=cu126 bash benchmarks/gpu_smoke.sh   # another CUDA build of the same torch
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "gpu_smoke: no GPU on this machine (nvidia-smi lists none): nothing to run"
    exit 0
fi
nvidia-smi -L

venv=${GPU_SMOKE_VENV:-.gpu-venv}
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# the version pyproject pins, built for CUDA; pip keeps it when the project is installed next
python -m pip install -q torch==2.13.0 --index-url "https://download.pytorch.org/whl/${CUDA_WHEELS:-cu128}"
python -m pip install -q -e '.[dev]'
python -c "import torch; assert torch.cuda.is_available(), 'this torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())"

HF_HUB_OFFLINE=1 python -m pytest -m device -rs tests

run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
python - "$run_dir" <<'EOF'
import sys

from mtbert.config import finish, load_raw
from mtbert.training.trainer import train

config = "configs/deeppavlov_example.yaml"
cfg = finish(load_raw(config, ["training.max_steps=200", "training.eval_every=200", "training.device=cuda",
                               "training.progress=false"]), config)
summary = train(cfg, sys.argv[1] + "/run")
print(f"gpu_smoke: {summary['steps']} steps of the five-task example in {summary['train_seconds']} s: "
      f"{summary['train_examples'] / summary['train_seconds']:.0f} training examples/s "
      f"({summary['precision']}; the dev evaluation after it took {summary['eval_seconds']} s)")
EOF
