"""A few calls of one Hopper layer shape, for ncu: python3 tools/sm90_profile.py N K M [activation]"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpu_data import random_layer, random_rows  # noqa: E402

n, k, m = (int(v) for v in sys.argv[1:4])
layer = random_layer(n, k, seed=1, activation=sys.argv[4] if len(sys.argv) > 4 else "per-token")
x = random_rows(m, k, seed=2)
for _ in range(5):
    layer(x)
torch.cuda.synchronize()
