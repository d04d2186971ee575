#!/usr/bin/env bash
# Device-resident scoring on a GPU machine (nothing here needs a GPU to be installed or imported
# elsewhere; this script does). Prints, as JSON:
#   1. probes.regions_torch on the GPU against the numpy RegionScorer (float64, max abs difference);
#   2. bench/dissect_speed.py --device cuda: dissect / forward for VGG16 conv4_1..conv5_3, all 13
#      conv layers, ResNet50 layer1..layer4, and 64 regions per image (random weights, medians of 3).
# Usage: bash bench/gpu_check.sh [--images N]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
IMAGES=${2:-80}
"$PY" - <<'PYEOF'
import json, numpy as np, torch
from probes.regions import RegionScorer
from probes.regions_torch import TorchRegionScorer
assert torch.cuda.is_available(), "no CUDA device: run this on a GPU machine"
rng = np.random.default_rng(0)
masks = rng.random((6, 600, 800)) < 0.2
fix = rng.random((600, 800)) < 0.001
scorer = RegionScorer(masks, fix)
worst = 0.0
for shape in ((512, 14, 14), (512, 28, 28), (64, 224, 224)):
    maps = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    ref = scorer.score(maps)
    got = TorchRegionScorer(scorer, "cuda").score(maps.cuda())
    assert np.array_equal(np.isnan(ref), np.isnan(got))
    worst = max(worst, float(np.nanmax(np.abs(ref - got))))
print(json.dumps({"torch_cuda_vs_numpy_max_abs_diff": worst, "device": torch.cuda.get_device_name()}))
assert worst < 1e-9, worst
PYEOF
"$PY" bench/dissect_speed.py --device cuda --images "$IMAGES" --repeats 3
"$PY" bench/dissect_speed.py --device cuda --images "$IMAGES" --repeats 3 --layers all
"$PY" bench/dissect_speed.py --device cuda --images "$IMAGES" --repeats 3 --model resnet50 --layers layer1,layer2,layer3,layer4
"$PY" bench/dissect_speed.py --device cuda --images 24 --repeats 3 --dataset osie-like --regions-per-image 64
