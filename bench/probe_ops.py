"""Which torch ops around NvFp4Linear are batch invariant on this GPU? Evidence for docs/models.md.

    python bench/probe_ops.py [--out DIR]

For each op, at the widths of real models (Llama-3.1-8B/70B), the rows of an M-row call are compared bitwise with the
same rows computed alone (M = 1), for M from 2 to 1024; attention is probed in prefill (a sequence alone vs in a
batch) and in decode (one query over a KV cache, batch 1 vs many), for every SDPA backend torch offers here. Inputs
have wide per-row scale spreads (narrow spreads hide reordering). Prints a table and writes probe_ops-<gpu>.json.
Nothing here is asserted: the script reports what the device does (nvfp4's own ops are tested in tests/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

M_VALUES = (2, 3, 8, 16, 64, 256, 1024)


def rows(m: int, h: int, seed: int, dtype=torch.bfloat16) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(m, h, device="cuda", generator=g)
    scale = torch.exp2(torch.randint(-8, 8, (m, 1), device="cuda", generator=g).float())
    return (x * scale).to(dtype)


def rowwise(fn, h: int, seed: int) -> dict[int, int]:
    """For each M: how many of the probed rows (0, M/2, M-1) of fn(x[M]) differ from fn(x[r:r+1])."""
    x = rows(max(M_VALUES), h, seed)
    out = {}
    for m in M_VALUES:
        full = fn(x[:m])
        out[m] = sum(int(not torch.equal(full[r:r + 1], fn(x[r:r + 1]))) for r in sorted({0, m // 2, m - 1}))
    return out


def hf_rms_norm(h: int):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(h, eps=1e-5).cuda().to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(h, device="cuda"))
    return norm


def sdpa_backends() -> dict[str, object]:
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


def attention_probe(backend, *, heads: int, kv_heads: int, head_dim: int, q_len: int, kv_len: int, batches) -> dict:
    """Batch row 0 (the needle) of an SDPA call with B sequences vs the needle alone."""
    from torch.nn.attention import sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(q_len * 7 + kv_len)
    bmax = max(batches)
    q = torch.randn(bmax, heads, q_len, head_dim, device="cuda", generator=g).to(torch.bfloat16)
    k = (torch.randn(bmax, kv_heads, kv_len, head_dim, device="cuda", generator=g) * 3).to(torch.bfloat16)
    v = torch.randn(bmax, kv_heads, kv_len, head_dim, device="cuda", generator=g).to(torch.bfloat16)
    causal = q_len == kv_len
    res = {}
    try:
        with sdpa_kernel(backend):
            def run(b, pos):
                order = list(range(1, b)) if b > 1 else []
                idx = order[:pos] + [0] + order[pos:]
                o = F.scaled_dot_product_attention(q[idx], k[idx], v[idx], is_causal=causal, enable_gqa=heads != kv_heads)
                return o[pos]
            alone = run(1, 0)
            for b in batches:
                res[b] = int(not torch.equal(run(b, b // 2), alone))
    except RuntimeError as exc:  # backend unavailable for this shape/dtype
        return {"error": str(exc).splitlines()[0][:160]}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("probe_ops.py: needs a CUDA GPU", file=sys.stderr)
        return 77
    torch.manual_seed(0)
    report: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "m_values": M_VALUES, "rowwise": {}, "attention": {},
    }
    with torch.no_grad():
        for h in (4096, 8192):
            norm = hf_rms_norm(h)
            report["rowwise"][f"LlamaRMSNorm H={h}"] = rowwise(norm, h, 1)
            report["rowwise"][f"torch.nn.functional.rms_norm H={h}"] = rowwise(
                lambda x, w=norm.weight: F.rms_norm(x, (x.shape[-1],), w, 1e-5), h, 2)
            report["rowwise"][f"softmax(fp32) H={h}"] = rowwise(lambda x: torch.softmax(x.float(), -1), h, 3)
            report["rowwise"][f"silu(x)*x H={h}"] = rowwise(lambda x: F.silu(x) * x, h, 4)
            w = rows(h, h, 5) * 0.01
            report["rowwise"][f"bf16 x @ W.T (cuBLAS) N=K={h}"] = rowwise(lambda x, w=w: x @ w.t(), h, 6)
        try:
            from nvfp4 import InvariantRMSNorm  # present once the invariant norm exists
            inv = InvariantRMSNorm(hf_rms_norm(4096))
            report["rowwise"]["nvfp4.InvariantRMSNorm H=4096"] = rowwise(inv, 4096, 7)
        except ImportError:
            pass
        cases = [
            ("prefill L=512", dict(q_len=512, kv_len=512, batches=(2, 4, 16))),
            ("prefill L=4096", dict(q_len=4096, kv_len=4096, batches=(2, 4))),
            ("decode kv=64", dict(q_len=1, kv_len=64, batches=(2, 16, 64, 256))),
            ("decode kv=1024", dict(q_len=1, kv_len=1024, batches=(2, 16, 64, 256))),
            ("decode kv=8192", dict(q_len=1, kv_len=8192, batches=(2, 16, 64))),
        ]
        for name, backend in sdpa_backends().items():
            for case, kw in cases:
                report["attention"][f"sdpa {name} {case}"] = attention_probe(backend, heads=32, kv_heads=8, head_dim=128, **kw)
    print(f"{report['gpu']}, torch {report['torch']}: rows that differ from the row alone (0 = invariant)")
    for section in ("rowwise", "attention"):
        for name, res in report[section].items():
            cells = res.get("error") if isinstance(res, dict) and "error" in res else \
                "  ".join(f"{k}:{v}" for k, v in res.items())
            print(f"  {name:<44} {cells}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"probe_ops-{report['gpu'].replace(' ', '-')}-{report['date']}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
