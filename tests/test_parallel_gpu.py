"""Tensor parallelism on a CUDA device with a group of one rank (gloo; the multi-GPU NCCL run is separate): the
sharded model's logits are batch invariant and equal the plain model's with the same (per-head) attention, and the
reference backend's tensor-parallel pieces give the same bits on CUDA as on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import nvfp4  # noqa: E402
from nvfp4 import backends  # noqa: E402
from nvfp4.activation import per_token_global_scale  # noqa: E402
from nvfp4.parallel_attention import install_per_head_attention  # noqa: E402
from nvfp4.reference import add_chunks_in_order  # noqa: E402
from conftest import PACKAGE_FIXTURES, requires_cuda, wide_spread  # noqa: E402

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture
def group_of_one():
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield dist.new_group([0])
    if own:
        dist.destroy_process_group()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_group_of_one_on_cuda(group_of_one, backend):
    path = PACKAGE_FIXTURES / "modelopt-nvfp4-wide"
    ids = torch.randint(4, 500, (8, 16), generator=torch.Generator().manual_seed(3)).cuda()
    model = nvfp4.from_pretrained(path, batch_invariant=True, device="cuda", backend=backend, tp_group=group_of_one)
    plain = nvfp4.from_pretrained(path, batch_invariant=True, device="cuda", backend=backend)
    assert install_per_head_attention(plain)
    alone = torch.cat([_logits(plain, ids[i:i + 1]) for i in range(8)])
    g = torch.Generator().manual_seed(4)
    for m in (8, 3, 1):
        rows = torch.randperm(8, generator=g)[:m].cuda()
        assert torch.equal(_logits(model, ids[rows]), alone[rows]), f"batch {m}"


def test_reference_chunk_partials_cuda_equal_cpu():
    n, k = 96, 4096
    linear = torch.nn.Linear(k, n, dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(wide_spread(n, k, seed=1))
    layer = nvfp4.NvFp4Linear.from_linear(linear, batch_invariant=True, backend="reference")
    x = wide_spread(7, k, seed=2)
    row_scale = per_token_global_scale(wide_spread(7, 2 * k, seed=3))  # scales of wider rows than this shard
    ref = backends.get("reference")
    cpu_parts, cpu_alpha = ref.chunk_partials(layer, x, 512, row_scale)
    cpu_out = ref.epilogue(layer, add_chunks_in_order(cpu_parts), cpu_alpha, torch.bfloat16)
    layer.cuda()
    cuda_parts, cuda_alpha = ref.chunk_partials(layer, x.cuda(), 512, row_scale.cuda())
    cuda_out = ref.epilogue(layer, add_chunks_in_order(cuda_parts), cuda_alpha, torch.bfloat16)
    assert torch.equal(cuda_parts.cpu(), cpu_parts) and torch.equal(cuda_alpha.cpu(), cpu_alpha)
    assert torch.equal(cuda_out.cpu(), cpu_out)
