"""NvFp4Experts: the routed experts of a mixture-of-experts layer with NVFP4 weights, a drop-in for transformers'
fused experts modules (`Qwen3MoeExperts`, `DeepseekV3Experts`, ...: EXPERTS_CLASSES).

forward(hidden_states [T, H], top_k_index [T, k], top_k_weights [T, k]) -> [T, H], as transformers' experts:
each token goes through the k experts its router chose (an index equal to the number of experts means "none", as
transformers' masked routing writes it) and their outputs are added with the router's weights.

Every step is row independent, so a token's output depends only on its hidden state, its routing, the weights
and the device type, never on which or how many other tokens share the batch or its experts:
1. the (token, slot) pairs are sorted by expert with a stable sort (offsets[e] = first row of expert e);
2. gate and up: NvFp4GroupedLinear of the hidden rows (each expert's NVFP4 GEMM, row independent, with the
   library's fixed K-reduction order); `act_fn(gate) * up` elementwise in the model dtype (as transformers);
3. down: NvFp4GroupedLinear of that;
4. the combination, in a fixed order and dtype: for each token, slot 0, 1, ..., k-1 in the router's order
   (rank order with nvfp4's invariant routers, moe_routing.py): acc = fp32(y_0) * fp32(w_0), then
   acc = acc + fp32(y_j) * fp32(w_j), one IEEE multiplication and one addition per slot, rounded once to the
   model dtype at the end (transformers adds bf16 products into a bf16 buffer, in expert-index order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .checks import require_dtype, require_tensor
from .moe_linear import NvFp4GroupedLinear

# transformers' fused experts classes (5.x) whose forward is exactly the routed SwiGLU-style computation above with
# `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I] parameters, and whose checkpoints name the experts
# `<module>.<e>.{gate,up,down}_proj` (tests/test_moe_invariance.py compares each forward's source with Qwen3MoeExperts').
EXPERTS_CLASSES = ("Qwen3MoeExperts", "Qwen2MoeExperts", "OlmoeExperts", "DeepseekV3Experts")
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _tracing(t: torch.Tensor) -> bool:
    """Whether host reads of device values are off limits: torch.compile tracing or CUDA-graph capture."""
    return torch.compiler.is_compiling() or (t.is_cuda and torch.cuda.is_current_stream_capturing())


class NvFp4Experts(nn.Module):
    """E routed experts (gate/up: H -> I, down: I -> H) with NVFP4 weights; submodules gate_proj, up_proj,
    down_proj are NvFp4GroupedLinear (stacked per-expert weights, ModelOpt layout per expert)."""

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        *,
        act_fn: Callable[[torch.Tensor], torch.Tensor],
        batch_invariant: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        activation: str = "per-token",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not callable(act_fn):
            raise TypeError(f"NvFp4Experts: act_fn must be callable (e.g. transformers' ACT2FN['silu']), got {type(act_fn).__name__}")
        kw = dict(batch_invariant=batch_invariant, device=device, dtype=dtype, activation=activation, backend=backend)
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.gate_proj = NvFp4GroupedLinear(num_experts, hidden_size, intermediate_size, **kw)
        self.up_proj = NvFp4GroupedLinear(num_experts, hidden_size, intermediate_size, **kw)
        self.down_proj = NvFp4GroupedLinear(num_experts, intermediate_size, hidden_size, **kw)
        self.act_fn = act_fn
        self.activation, self.batch_invariant, self.dtype = activation, bool(batch_invariant), dtype

    def projections(self) -> dict[str, NvFp4GroupedLinear]:
        return {p: getattr(self, p) for p in PROJECTIONS}

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        fn = "NvFp4Experts.forward"
        require_tensor(fn, "hidden_states", hidden_states)
        if hidden_states.dim() != 2 or hidden_states.shape[1] != self.hidden_size:
            raise ValueError(f"{fn}: hidden_states must have shape [tokens, {self.hidden_size}], got {tuple(hidden_states.shape)}")
        tokens = hidden_states.shape[0]
        if top_k_index.dim() != 2 or top_k_index.shape[0] != tokens or tuple(top_k_weights.shape) != tuple(top_k_index.shape):
            raise ValueError(f"{fn}: top_k_index and top_k_weights must both have shape [{tokens}, k], got "
                             f"{tuple(top_k_index.shape)} and {tuple(top_k_weights.shape)}")
        require_dtype(fn, "top_k_index", top_k_index, (torch.int64, torch.int32))
        k, e = top_k_index.shape[1], self.num_experts
        flat = top_k_index.reshape(-1).long()
        # The value check reads the indices on the host; under CUDA-graph capture or torch.compile it is skipped, so
        # that an MoE layer is one sync-free sequence of device work there (the grouped kernels read the offsets on
        # the GPU). There an index outside [0, e] is clamped into it and changes only its own token's output.
        if flat.numel() and not _tracing(flat) and (int(flat.min()) < 0 or int(flat.max()) > e):
            raise ValueError(f"{fn}: top_k_index values must be in [0, {e}] ({e}: no expert), got "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        flat = flat.clamp(0, e)
        # slots grouped by expert, token order inside an expert; offsets[i] = slots of experts below i (static shapes)
        flat_sorted, order = torch.sort(flat, stable=True)
        offsets = torch.searchsorted(flat_sorted, torch.arange(e + 1, device=flat.device))
        # Every slot goes through: those with index e (no expert) sort last, past offsets[e], where no expert's
        # GEMM writes; their rows are unspecified values that the slot mask below drops.
        x_sorted = hidden_states[order // k]
        h = self.act_fn(self.gate_proj(x_sorted, offsets)) * self.up_proj(x_sorted, offsets)
        y_sorted = self.down_proj(h, offsets)

        y = hidden_states.new_empty((tokens * k, self.hidden_size))
        y[order] = y_sorted
        y = y.reshape(tokens, k, self.hidden_size)
        used = (top_k_index < e).unsqueeze(-1)
        w = top_k_weights.unsqueeze(-1)
        acc = None
        for j in range(k):  # slot order, fp32, one rounding at the end
            term = torch.where(used[:, j], y[:, j].float() * w[:, j].float(), torch.zeros((), device=y.device))
            acc = term if acc is None else acc + term
        return acc.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, "
                f"intermediate_size={self.intermediate_size}, activation={self.activation}")
