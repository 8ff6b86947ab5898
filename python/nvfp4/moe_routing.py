"""Batch-invariant mixture-of-experts routers: each token's expert choice and weights are a pure function of its row.

transformers' routers compute `F.linear` logits (cuBLAS picks its K-reduction order from the batch on GPUs), a
softmax or sigmoid whose reductions and vectorised `exp` are not promised to be independent of the tensor's shape,
and `torch.topk`, whose order among equal scores is unspecified. The replacements here keep the formulas and fix
every step:

- logits: the invariant linear (`nvfp4::linear_invariant`, the reference GEMM's fixed reduction tree over K);
- `exp`: `exp_fixed`, in float64 from IEEE additions, multiplications and a rounding only (range reduction by
  ln 2, a degree-13 Taylor polynomial, an exact power of two from the exponent bits), rounded once to float32.
  Each of those ops rounds one element on its own, so an element's result cannot depend on its position in a
  SIMD vector or on the tensor's shape, on CPU or CUDA. Before the float32 rounding it is within about 1e-15
  (relative) of exp, so it is the correctly rounded float32 exp but for inputs that close to a rounding midpoint
  (it equals torch's float64 exp rounded to float32 on every input tests/test_moe_invariance.py tries);
- sums (softmax denominator, top-k normalisation): `fixed_sum`, a "fold halves" tree over the last dimension padded
  with +0 to a power of two;
- top-k: **the tie rule**: experts are ranked by score, descending; equal scores (+0 and -0 are equal) rank the
  lower expert index first; a NaN score counts as -inf (chosen last, among the -inf ones by index). The chosen
  experts are returned in that rank order, which is also the order in which NvFp4Experts adds their outputs.

Two router formulas are covered, each an allowlist of transformers classes whose forward is exactly it
(tests/test_moe_invariance.py compares their source with the reference class of the family):
- softmax top-k (Qwen3-MoE, Qwen2-MoE, OLMoE): logits in the hidden dtype, float32 softmax, top-k, optional
  renormalisation over the k chosen (`norm_topk_prob`), weights cast to the logits' dtype;
- grouped sigmoid top-k (DeepSeek-V3): float32 logits, sigmoid scores, `e_score_correction_bias` added for the
  choice only, experts in `n_group` groups ranked by the sum of their two best scores, the best `topk_group`
  groups kept, top-k among their experts, weights = the chosen experts' sigmoid scores, optionally renormalised
  (+1e-20), times `routed_scaling_factor`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import ops
from .invariant_ops import linear_invariant, linear_invariant_impl
from .module_tree import set_module

SOFTMAX_TOPK_ROUTER_CLASSES = ("Qwen3MoeTopKRouter", "Qwen2MoeTopKRouter", "OlmoeTopKRouter")
GROUPED_TOPK_ROUTER_CLASSES = ("DeepseekV3TopkRouter",)
ROUTER_CLASSES = SOFTMAX_TOPK_ROUTER_CLASSES + GROUPED_TOPK_ROUTER_CLASSES

# exp_fixed constants: ln 2 split so that n * _LN2_HI is exact for |n| < 2^20 (fdlibm's split), 1/ln 2, and the
# clamp that keeps 2^n a normal float64 while exp of it over- or underflows float32 anyway.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_CLAMP = 200.0
# Taylor coefficients 1/i! of exp, i = 0..13, as Python float64 (the same on every device): |r| <= 0.347 leaves a
# truncation error below 4e-18 (relative).
_EXP_COEFFICIENTS = tuple(1.0 / math.factorial(i) for i in range(14))


def exp_fixed(x: torch.Tensor) -> torch.Tensor:
    """float32 exp(x) from IEEE float64 ops only (module docstring): the same bits for an element wherever it is."""
    xd = x.double().clamp(-_EXP_CLAMP, _EXP_CLAMP)
    n = torch.round(xd * _INV_LN2)
    r = (xd - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln2/2 (plus rounding)
    p = torch.full_like(r, _EXP_COEFFICIENTS[-1])
    for c in reversed(_EXP_COEFFICIENTS[:-1]):  # Horner, one multiplication and one addition per step
        p = p * r + c
    # 2^n exactly, from the exponent bits (n in [-289, 289] after the clamp). A NaN x leaves p NaN, so the product
    # is NaN whatever 2^n the zeroed n gives.
    two_n = torch.bitwise_left_shift(n.nan_to_num(0.0).to(torch.int64) + 1023, 52).view(torch.float64)
    return (p * two_n).float()


def sigmoid_fixed(x: torch.Tensor) -> torch.Tensor:
    """float32 1 / (1 + exp(-x)) with exp_fixed; one IEEE addition and division per element."""
    one = torch.ones((), dtype=torch.float32, device=x.device)
    return one / (one + exp_fixed(-x.float()))


def fixed_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension (keepdim) in a fixed tree: pad with +0 to a power of two P, then fold halves
    (`s[i] += s[i + L/2]`, L = P ... 2). Adding +0 leaves a nonzero value unchanged, so the order depends on the
    length alone."""
    length = x.shape[-1]
    padded = 1 << max(length - 1, 0).bit_length()
    if padded != length:
        x = torch.nn.functional.pad(x, (0, padded - length))
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x


def softmax_fixed(logits: torch.Tensor) -> torch.Tensor:
    """float32 softmax over the last dimension: exp_fixed(x - max) / fixed_sum."""
    x = logits.float()
    e = exp_fixed(x - x.amax(dim=-1, keepdim=True))  # the max is exact whatever the order
    return e / fixed_sum(e)


def top_k_fixed(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k best scores of each row under the tie rule of the module docstring, in rank
    order. A stable descending sort keeps equal scores in index order."""
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"top_k_fixed: k must be in [1, {scores.shape[-1]}] (the number of scores per row), got {k}")
    key = torch.where(torch.isnan(scores), torch.full_like(scores, float("-inf")), scores)
    _, order = torch.sort(key, dim=-1, descending=True, stable=True)
    indices = order[..., :k]
    return scores.gather(-1, indices), indices


def _invariant_logits(x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return ops.call(linear_invariant, linear_invariant_impl, x2, weight.to(x2.dtype), None)


class InvariantSoftmaxTopKRouter(nn.Module):
    """Drop-in for the softmax top-k routers (SOFTMAX_TOPK_ROUTER_CLASSES); shares their weight Parameter.
    forward(hidden) -> (router_logits [T, E], weights [T, k] in the logits' dtype, indices [T, k] in rank order)."""

    def __init__(self, router: nn.Module) -> None:
        super().__init__()
        self.top_k, self.num_experts = int(router.top_k), int(router.num_experts)
        self.norm_topk_prob, self.hidden_dim = bool(router.norm_topk_prob), int(router.hidden_dim)
        self.weight = router.weight

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2 = hidden_states.reshape(-1, self.hidden_dim)
        logits = _invariant_logits(x2, self.weight)
        values, indices = top_k_fixed(softmax_fixed(logits), self.top_k)
        if self.norm_topk_prob:
            values = values / fixed_sum(values)
        return logits, values.to(logits.dtype), indices

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}, norm_topk_prob={self.norm_topk_prob}, batch-invariant"


class InvariantGroupedTopKRouter(nn.Module):
    """Drop-in for DeepSeek-V3's grouped sigmoid router (GROUPED_TOPK_ROUTER_CLASSES); shares its weight Parameter
    and e_score_correction_bias buffer. forward(hidden) -> (float32 logits, float32 weights [T, k], indices)."""

    def __init__(self, router: nn.Module) -> None:
        super().__init__()
        self.top_k, self.num_experts = int(router.top_k), int(router.num_experts)
        self.num_group, self.topk_group = int(router.num_group), int(router.topk_group)
        self.norm_topk_prob, self.hidden_dim = bool(router.norm_topk_prob), int(router.hidden_dim)
        self.routed_scaling_factor = float(router.routed_scaling_factor)
        fn = "InvariantGroupedTopKRouter"
        if self.num_group < 1 or self.num_experts % self.num_group or self.num_experts // self.num_group < 2:
            raise ValueError(f"{fn}: n_group={self.num_group} must divide the number of experts {self.num_experts} "
                             f"into groups of at least 2 (a group's score is the sum of its two best)")
        if not 1 <= self.topk_group <= self.num_group:
            raise ValueError(f"{fn}: topk_group must be in [1, n_group={self.num_group}], got {self.topk_group}")
        if not 1 <= self.top_k <= self.topk_group * (self.num_experts // self.num_group):
            raise ValueError(f"{fn}: num_experts_per_tok={self.top_k} must be in [1, the {self.topk_group} kept groups' "
                             f"{self.topk_group * (self.num_experts // self.num_group)} experts]")
        self.weight = router.weight
        self.e_score_correction_bias = router.e_score_correction_bias

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2 = hidden_states.reshape(-1, self.hidden_dim).float()
        logits = _invariant_logits(x2, self.weight.float())
        scores = sigmoid_fixed(logits)
        choice = scores + self.e_score_correction_bias.float()
        groups = choice.reshape(-1, self.num_group, self.num_experts // self.num_group)
        best_two, _ = top_k_fixed(groups, 2)
        group_scores = best_two[..., 0] + best_two[..., 1]
        _, kept = top_k_fixed(group_scores, self.topk_group)
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter(-1, kept, True)
        expert_mask = group_mask.unsqueeze(-1).expand_as(groups).reshape(-1, self.num_experts)
        choice = choice.masked_fill(~expert_mask, float("-inf"))
        _, indices = top_k_fixed(choice, self.top_k)
        weights = scores.gather(-1, indices)
        if self.norm_topk_prob:
            weights = weights / (fixed_sum(weights) + torch.tensor(1e-20, dtype=torch.float32, device=weights.device))
        weights = weights * torch.tensor(self.routed_scaling_factor, dtype=torch.float32, device=weights.device)
        return logits, weights, indices

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, top_k={self.top_k}, n_group={self.num_group}, "
                f"topk_group={self.topk_group}, routed_scaling_factor={self.routed_scaling_factor}, batch-invariant")


def invariant_router_for(router: nn.Module) -> nn.Module | None:
    """The invariant replacement of a router of an allowlisted class (None for any other module)."""
    name = type(router).__name__
    if name in SOFTMAX_TOPK_ROUTER_CLASSES:
        return InvariantSoftmaxTopKRouter(router)
    if name in GROUPED_TOPK_ROUTER_CLASSES:
        return InvariantGroupedTopKRouter(router)
    return None


def is_router(module: nn.Module) -> bool:
    """A transformers MoE router of an allowlisted class, or its invariant replacement (unquantized in every
    checkpoint: the tools list it under ignore / exclude_modules)."""
    return type(module).__name__ in ROUTER_CLASSES or isinstance(module, (InvariantSoftmaxTopKRouter,
                                                                          InvariantGroupedTopKRouter))


def install_invariant_routers(model: nn.Module) -> list[str]:
    """Replace every allowlisted router of `model` by its invariant version; returns the replaced names."""
    names = [n for n, m in model.named_modules() if type(m).__name__ in ROUTER_CLASSES]
    for n in names:
        set_module(model, n, invariant_router_for(model.get_submodule(n)))
    return names
