"""The reference GEMM's order follows the library's chunk rule and decomposes over whole-chunk K shards."""

import pytest
import torch

import nvfp4
from nvfp4.activation import quantize_activations_reference
from nvfp4.chunking import chunk_k
from nvfp4.reference import accumulate, add_chunks_in_order, chunk_sums, dequantize_weight_blocks
from conftest import wide_spread


def _operands(m, n, k, seed):
    q = nvfp4.quantize(wide_spread(n, k, seed=seed), recipe="modelopt")
    w = dequantize_weight_blocks(q.data, q.scale.view(torch.uint8))
    a = quantize_activations_reference(wide_spread(m, k, seed=seed + 1), None)[2].float()
    return a, w


@pytest.mark.parametrize("n,k,tp", [(64, 2048, 2), (64, 2048, 4), (40, 4096, 8), (96, 6144, 4)])
def test_whole_chunk_shards_summed_in_chunk_order_give_the_bits_of_the_whole(n, k, tp):
    kc = chunk_k(n, k)
    assert (k // tp) % kc == 0  # the rule gives every shard whole chunks where K % 2048 == 0
    a, w = _operands(5, n, k, seed=n + k)
    whole = accumulate(a, w)
    shard = k // tp
    total = None
    for r in range(tp):  # each rank's chunk sums, added to the running total of the ranks before it
        part = chunk_sums(a[:, r * shard:(r + 1) * shard], w[:, r * shard:(r + 1) * shard], kc)
        assert part.shape == (shard // kc, 5, n)
        total = add_chunks_in_order(part, total)
    assert torch.equal(total, whole)
    # Non-vacuous: a tree all-reduce of each rank's own total (what serving engines do) changes bits.
    tree = [accumulate(a[:, r * shard:(r + 1) * shard], w[:, r * shard:(r + 1) * shard], kc) for r in range(tp)]
    while len(tree) > 1:
        tree = [tree[i] + tree[i + 1] for i in range(0, len(tree), 2)]
    assert not torch.equal(tree[0], whole)


def test_order_is_the_documented_one():
    """Pairwise within 16-blocks, pairwise over each chunk's block sums padded to a power of two, chunks in order."""
    a, w = _operands(3, 24, 1280, seed=3)
    kc = 768  # two chunks, the second short (512 of 768); each chunk's 48 block sums padded to 64 leaves
    prods = a[:, None, :] * w[None, :, :]  # [M, N, K] exact
    blocks = prods.reshape(3, 24, -1, 16)
    for _ in range(4):
        blocks = blocks[..., 0::2] + blocks[..., 1::2]
    block_sums = blocks[..., 0]  # [M, N, 80]
    total = torch.zeros(3, 24)
    for c in range(2):
        leaves = block_sums[..., c * 48:(c + 1) * 48]
        leaves = torch.nn.functional.pad(leaves, (0, 64 - leaves.shape[-1]))
        while leaves.shape[-1] > 1:
            leaves = leaves[..., 0::2] + leaves[..., 1::2]
        total = total + leaves[..., 0]
    assert torch.equal(accumulate(a, w, kc), total)


def test_chunk_length_changes_the_bits():
    """The order really depends on the chunk length: the tests that pass the global one could fail otherwise."""
    a, w = _operands(8, 32, 2048, seed=11)
    assert not torch.equal(accumulate(a, w, 256), accumulate(a, w, 1024))


def test_default_chunk_is_the_library_rule():
    a, w = _operands(4, 48, 4096, seed=12)
    assert torch.equal(accumulate(a, w), accumulate(a, w, chunk_k(48, 4096)))


@pytest.mark.parametrize("chunk", [0, 8, 100, 256.0, True])
def test_chunk_must_be_a_multiple_of_the_block(chunk):
    a, w = _operands(1, 8, 256, seed=1)
    with pytest.raises(ValueError, match="chunk must be a positive multiple of 16"):
        chunk_sums(a, w, chunk)
