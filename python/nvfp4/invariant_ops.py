"""Batch-invariant replacements for the bf16/fp16 ops that surround NvFp4Linear in a model.

`InvariantLinear` replaces an unquantized nn.Linear (the lm_head, ignored layers): torch's matmul picks its kernel
(and with it the K-reduction order) from the batch size on GPUs, and on CPU from the backend library's own
heuristics, so a row of `x @ W^T` can change with the other rows. `InvariantLinear` computes every output with the
reference GEMM's fixed reduction order (nvfp4.reference.accumulate: pairwise inside 16-element blocks, pairwise over
the blocks of each K chunk, chunk sums in order), which depends on (N, K) alone. Products of two bf16 (or fp16)
values are exact in fp32, so the result is a pure function of the row, bit for bit, on CPU and CUDA. It is slow
(elementwise ops, no tensor cores): the price of a bitwise guarantee for the one or two bf16 layers a quantized model
keeps.

The state_dict is the nn.Linear one (`weight`, `bias`), and the weight Parameter is shared, not copied, so tied
embeddings stay tied. The math is a torch.library custom op (`nvfp4::linear_invariant`) with a fake
implementation: torch.compile keeps it opaque and cannot re-fuse the reduction.
"""

from __future__ import annotations

import torch
from torch import nn

from .format import BLOCK_SIZE
from .reference import accumulate


def linear_invariant_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    k = x.shape[-1]
    a, w = x.float(), weight.float()
    pad = (-k) % BLOCK_SIZE
    if pad:  # zero products are exact: padding K does not change any sum
        a = torch.nn.functional.pad(a, (0, pad))
        w = torch.nn.functional.pad(w, (0, pad))
    acc = accumulate(a.contiguous(), w.contiguous())
    if bias is not None:
        acc = acc + bias.float()
    return acc.to(x.dtype)


@torch.library.custom_op("nvfp4::linear_invariant", mutates_args=())
def linear_invariant(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return linear_invariant_impl(x, weight, bias)


@linear_invariant.register_fake
def _(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0]))


class InvariantLinear(nn.Module):
    """Drop-in for a bf16/fp16 nn.Linear whose output rows are bitwise independent of the batch."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"InvariantLinear: expected an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # shared Parameter: tied embeddings stay tied
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return x.new_empty((*lead, self.out_features))
        weight = self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if torch.compiler.is_compiling():
            out = linear_invariant(x2, weight, bias)
        else:
            out = linear_invariant_impl(x2, weight, bias)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, batch-invariant"
