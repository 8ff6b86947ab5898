"""Random NVFP4 layers and activations generated on the GPU (the big shapes are too slow to build on CPU)."""

from __future__ import annotations

import torch

from nvfp4 import NvFp4Linear, NvFp4Tensor


def random_layer(n: int, k: int, *, seed: int, batch_invariant: bool = True, activation: str = "per-token",
                 bias: bool = True, dtype: torch.dtype = torch.bfloat16) -> NvFp4Linear:
    """An NvFp4Linear with random codes and block scales spanning 2^-9..2^8 (wide spread), on cuda."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    data = torch.randint(0, 256, (n, k // 2), generator=g, device="cuda", dtype=torch.uint8)
    exps = torch.randint(-9, 9, (n, k // 16), generator=g, device="cuda").float()
    q = NvFp4Tensor(data, torch.exp2(exps).to(torch.float8_e4m3fn), torch.tensor(0.75, device="cuda"))
    b = torch.randn(n, generator=g, device="cuda").to(dtype) if bias else None
    return NvFp4Linear.from_quantized(q, bias=b, input_scale=0.01 if activation == "static" else None,
                                      activation=activation, batch_invariant=batch_invariant, dtype=dtype)


def random_rows(m: int, k: int, *, seed: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Rows whose magnitudes differ by up to 2^24 across rows and 2^20 across 16-element blocks."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(m, k // 16, 16, generator=g, device="cuda")
    x *= torch.exp2(torch.randint(-10, 10, (m, k // 16, 1), generator=g, device="cuda").float())
    x *= torch.exp2(torch.randint(-12, 12, (m, 1, 1), generator=g, device="cuda").float())
    return x.reshape(m, k).to(dtype)
