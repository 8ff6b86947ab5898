"""What every backend declares and implements: the unit of hardware knowledge.

A backend owns everything one hardware family needs: which compute capabilities its compiled code runs on, the
runtime layout of a layer's weights (made from the ModelOpt layout on the device it runs on, and reversed exactly for
state_dict/save), activation quantization, the GEMM, and the custom ops with their fake implementations.
NvFp4Linear holds the state and delegates here; backends/__init__.py is the registry that selects one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import _lib
from ..reference import add_chunks_in_order

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear
    from ..moe_linear import NvFp4GroupedLinear


class NoKernelError(RuntimeError):
    """No compiled kernel can serve this request on this device."""


class Backend:
    """One hardware family. Subclasses set the class attributes and implement prepare/unprepare/forward."""

    name: str = ""
    # SM number of the compiled code this backend needs (90 for sm_90a), None when it needs none.
    arch_sm: int | None = None
    # The exact compute capabilities that code runs on: arch-specific ("a") SASS runs on one capability only.
    capabilities: frozenset[tuple[int, int]] = frozenset()
    # C ABI entry point of the GEMM (its presence in the library says the backend was built).
    gemm_symbol: str | None = None
    activation_modes: tuple[str, ...] = ("static", "per-token", "none")

    def compiled(self) -> bool:
        """Whether the loaded library holds this backend's device code and entry point."""
        if self.arch_sm is None:
            return True
        return self.arch_sm in _lib.compiled_archs() and self.gemm_symbol is not None and _lib.has_symbol(self.gemm_symbol)

    def runs_on(self, capability: tuple[int, int] | None) -> bool:
        return capability is not None and tuple(capability) in self.capabilities

    # --- weights ----------------------------------------------------------------------------------------------

    def prepare(self, weight: torch.Tensor, weight_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ModelOpt layout (uint8 [N, K/2], e4m3 [N, K/16]) -> this backend's runtime layout, on the same device.

        The result replaces the ModelOpt tensors in the layer (no second copy stays resident)."""
        return weight, weight_scale

    def unprepare(self, weight: torch.Tensor, weight_scale: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact inverse of prepare: the ModelOpt-layout tensors for an N x K layer."""
        return weight, weight_scale

    # --- compute ----------------------------------------------------------------------------------------------

    def forward(self, layer: "NvFp4Linear", x2: torch.Tensor) -> torch.Tensor:
        """y [M, N] in x2's dtype for contiguous x2 [M, K] (M >= 1), with the layer's weights in this layout."""
        raise NotImplementedError

    def grouped_forward(self, layer: "NvFp4GroupedLinear", x_sorted: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """y [S, N] in x_sorted's dtype for the experts of a mixture-of-experts projection: rows offsets[e] to
        offsets[e+1] (int64 [E+1]) of contiguous x_sorted [S, K] go through expert e (moe_linear.py).

        This default calls forward once per expert that has rows, on layer.expert(e), so every row gets what an
        NvFp4Linear of that expert would give it. A backend with a grouped kernel (one launch for all experts)
        overrides it and must give the same bits."""
        out = x_sorted.new_empty((x_sorted.shape[0], layer.out_features))
        bounds = offsets.tolist()
        for e in range(layer.num_experts):
            lo, hi = bounds[e], bounds[e + 1]
            if hi > lo:
                out[lo:hi] = self.forward(layer.expert(e), x_sorted[lo:hi])
        return out

    # --- tensor parallelism (nvfp4.parallel) --------------------------------------------------------------------
    # A tensor-parallel rank holds a shard of a layer: some output features (column-parallel) or some whole K chunks
    # (row-parallel). Its bits equal the unsplit layer's only if it reduces with the unsplit layer's chunk length
    # (chunking.chunk_k of the whole N x K), which a shard's own shape does not give.

    def chunk_partials(
        self, layer: "NvFp4Linear", x2: torch.Tensor, chunk_k: int, row_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(partials, alpha) for the layer's weights (a shard: N_local x K_local) and contiguous x2 [M, K_local]:

        partials fp32 [ceil(K_local / chunk_k), M, N_local], chunk c the sum over x2's columns
        [c*chunk_k, (c+1)*chunk_k), started from zero in this backend's invariant in-chunk order, without alpha or
        bias; alpha fp32, one value or one per row, the factor epilogue() applies.
        chunk_k: the unsplit layer's chunk length. row_scale: fp32 [M] decode global scales of the rows, given for a
        per-token layer whose x2 holds part of each row (the scale comes from the whole row's amax); None: the layer's
        own rule on x2 (per-token on whole rows, static, or none)."""
        raise NoKernelError(
            f"nvfp4.parallel: the {self.name} backend has no chunk_partials yet (per-chunk fp32 partial sums with a "
            f"given chunk length), so it cannot serve a tensor-parallel shard bitwise; pass backend='reference', or "
            f"use a group of one rank"
        )

    def epilogue(
        self, layer: "NvFp4Linear", acc: torch.Tensor, alpha: torch.Tensor, out_dtype: torch.dtype
    ) -> torch.Tensor:
        """cast(alpha * acc + bias) for an fp32 accumulator acc [M, N_local], bit for bit what this backend's GEMM
        writes after its own accumulation (the layer's bias slice; None: no bias)."""
        raise NoKernelError(
            f"nvfp4.parallel: the {self.name} backend has no epilogue for fp32 accumulators yet, so it cannot finish a "
            f"tensor-parallel reduction bitwise; pass backend='reference', or use a group of one rank"
        )

    def forward_chunked(
        self, layer: "NvFp4Linear", x2: torch.Tensor, chunk_k: int, row_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """forward() reducing in chunks of chunk_k (the unsplit layer's), for a shard holding all of K: the chunk
        sums added in order from zero, then the epilogue. A kernel backend may override this with one launch."""
        partials, alpha = self.chunk_partials(layer, x2, chunk_k, row_scale)
        return self.epilogue(layer, add_chunks_in_order(partials), alpha, x2.dtype)
