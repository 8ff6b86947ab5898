"""The backend methods a tensor-parallel shard calls (backends/base.py): per-chunk partial sums with the unsplit
layer's chunk length and per-token scales of whole rows, and the epilogue; kernel backends say they lack them."""

from __future__ import annotations

import pytest
import torch

import nvfp4
from nvfp4 import backends
from nvfp4.activation import per_token_global_scale
from nvfp4.backends import NoKernelError
from conftest import wide_spread


@pytest.mark.parametrize("name", ["sm90", "sm100", "sm120"])
def test_kernel_backends_without_chunk_partials_say_so(name):
    layer = nvfp4.NvFp4Linear(64, 32, backend="reference")
    backend = backends.get(name)
    with pytest.raises(NoKernelError, match=f"the {name} backend has no chunk_partials yet"):
        backend.chunk_partials(layer, torch.zeros(1, 64, dtype=torch.bfloat16), 256)
    with pytest.raises(NoKernelError, match=f"the {name} backend has no epilogue"):
        backend.epilogue(layer, torch.zeros(1, 32), torch.ones(1), torch.bfloat16)
    with pytest.raises(NoKernelError, match="chunk_partials"):
        backend.forward_chunked(layer, torch.zeros(1, 64, dtype=torch.bfloat16), 256)


def test_reference_chunk_partials_of_a_k_shard_with_the_whole_rows_scale():
    """A per-token shard quantized with its whole rows' scale gives the whole layer's chunk sums of its K range."""
    n, k, kc = 48, 2048, 256
    linear = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(wide_spread(n, k, seed=3))
    full = nvfp4.NvFp4Linear.from_linear(linear, batch_invariant=True)
    x = wide_spread(5, k, seed=4)
    x[1, 0] = 1e6  # row 1's amax lies outside the shard
    ref = backends.get("reference")
    whole, alpha = ref.chunk_partials(full, x, kc)
    k0, k1 = 1024, 2048  # chunks 4..7
    shard = nvfp4.NvFp4Linear.from_quantized(
        nvfp4.NvFp4Tensor(full.weight[:, k0 // 2:k1 // 2], full.weight_scale[:, k0 // 16:k1 // 16],
                          full.weight_scale_2), batch_invariant=True)
    x_shard = x[:, k0:k1].contiguous()
    part, part_alpha = ref.chunk_partials(shard, x_shard, kc, per_token_global_scale(x))
    assert torch.equal(part_alpha, alpha)
    assert torch.equal(part, whole[k0 // kc:k1 // kc])
    own, _ = ref.chunk_partials(shard, x_shard, kc)  # the shard's own row amax: other bits
    assert not torch.equal(own, part)


def test_row_scale_is_for_per_token_layers():
    layer = nvfp4.NvFp4Linear(64, 32, activation="static", backend="reference")
    with pytest.raises(ValueError, match="row_scale is for per-token layers"):
        backends.get("reference").chunk_partials(layer, torch.ones(2, 64, dtype=torch.bfloat16), 256, torch.ones(2))


def test_row_scale_needs_one_value_per_row():
    layer = nvfp4.NvFp4Linear(64, 32, backend="reference")
    with pytest.raises(ValueError, match=r"row_scale must hold one value per row of x \(2\)"):
        backends.get("reference").chunk_partials(layer, torch.ones(2, 64, dtype=torch.bfloat16), 256, torch.ones(3))
