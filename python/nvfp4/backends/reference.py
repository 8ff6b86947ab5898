"""The reference backend: the documented math in plain torch ops, on any device (the default on CPU).

Weights stay in the ModelOpt layout. Activations go through the same per-row quantizer as the kernels
(activation.py, bit for bit), or its CUDA kernel when the library holds one for the device.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from .. import ops
from ..activation import quantize_activations_reference
from ..reference import chunk_sums, dequantize_weight_blocks, epilogue, gemm_reference
from .base import Backend

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear


def mm_reference_impl(act, w_packed, w_scale, alpha, bias, out_dtype: torch.dtype) -> torch.Tensor:
    ops.check_gemm_args("nvfp4.ops.mm_reference", act, w_packed, w_scale, alpha, bias, out_dtype)
    return gemm_reference(act, w_packed, w_scale, alpha, bias, out_dtype)


@torch.library.custom_op("nvfp4::mm_reference", mutates_args=())
def mm_reference(
    act: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, alpha: torch.Tensor,
    bias: torch.Tensor | None, out_dtype: torch.dtype,
) -> torch.Tensor:
    return mm_reference_impl(act, w_packed, w_scale, alpha, bias, out_dtype)


@mm_reference.register_fake
def _(act, w_packed, w_scale, alpha, bias, out_dtype):
    return act.new_empty((act.shape[0], w_packed.shape[0]), dtype=out_dtype)


# Whether the library holds the activation quantizer for a CUDA device: a constant for the device, so torch.compile
# bakes it in at trace time instead of tracing the ctypes query.
@torch.compiler.assume_constant_result
def _has_quantizer_kernel(device_index: int | None) -> bool:
    from . import quantizer_compiled_for

    device = torch.device("cuda", device_index) if device_index is not None else torch.device("cuda")
    return quantizer_compiled_for(torch.cuda.get_device_capability(device))


def activation_operand(
    layer: "NvFp4Linear", x2: torch.Tensor, row_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact dequantized activations or raw x for W4A16, alpha: one value or one per row).

    row_scale: per-token decode global scales [M] given from whole rows (x2 holds part of each row); the reference
    quantizer takes them, on any device (the CUDA quantizer reproduces it bit for bit but takes no row scales)."""
    if layer.activation == "none":
        return x2, layer.weight_scale_2.reshape(1)
    if row_scale is not None:
        if layer.activation != "per-token":
            raise ValueError(f"activation_operand: row_scale is for per-token layers, this one is {layer.activation!r}")
        _, _, act, alpha = quantize_activations_reference(x2, None, layer.weight_scale_2, row_scale=row_scale)
        return act, alpha
    static = layer.input_scale.reshape(1) if layer.input_scale is not None else None
    if x2.device.type == "cuda" and not _has_quantizer_kernel(x2.device.index):
        _, _, act, alpha = quantize_activations_reference(x2, static, layer.weight_scale_2)
        return act, alpha
    # the quantizer multiplies each row's decode scale by weight_scale_2: alpha comes out of the same launch
    return ops.call(ops.quantize_activations_dequant, ops.quantize_activations_dequant_impl, x2, static,
                    layer.weight_scale_2.reshape(1))


class ReferenceBackend(Backend):
    name = "reference"

    def runs_on(self, capability: tuple[int, int] | None) -> bool:
        return True

    def forward(self, layer: "NvFp4Linear", x2: torch.Tensor) -> torch.Tensor:
        act, alpha = activation_operand(layer, x2)
        bias = None if layer.bias is None else layer.bias.to(x2.dtype)
        return ops.call(mm_reference, mm_reference_impl, act, layer.weight, layer.weight_scale.view(torch.uint8), alpha,
                        bias, x2.dtype)

    def chunk_partials(
        self, layer: "NvFp4Linear", x2: torch.Tensor, chunk_k: int, row_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        act, alpha = activation_operand(layer, x2, row_scale)
        weights = dequantize_weight_blocks(layer.weight, layer.weight_scale.view(torch.uint8))
        return chunk_sums(act.float(), weights, chunk_k), alpha

    def epilogue(
        self, layer: "NvFp4Linear", acc: torch.Tensor, alpha: torch.Tensor, out_dtype: torch.dtype
    ) -> torch.Tensor:
        bias = None if layer.bias is None else layer.bias.to(out_dtype)
        return epilogue(acc, alpha, bias, out_dtype)


BACKEND = ReferenceBackend()
