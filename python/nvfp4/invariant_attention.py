"""Batch-invariant attention for transformers models: SDPA run one sequence at a time.

Why: on an H100 (bench/results/h100/probe_ops-*.json, `python bench/probe_ops.py`), torch's SDPA is batch
invariant in prefill, but in decode (one query over a KV cache of >= 1024 tokens) the flash and cuDNN kernels give a
sequence different bits alone than inside a batch of 2-256: they split the KV sequence into a number of chunks chosen
from batch x heads to fill the GPU, and the chunk partials are combined in a different order. The math backend
differs even at 64 cached tokens (its batched matmuls go through cuBLAS). None of this is controllable from torch.

`batch_invariant_sdpa` calls transformers' own `sdpa_attention_forward` once per sequence (batch slice of 1), so every
kernel choice a sequence sees is the one it would see alone: its result is, by construction, the result of running
it alone, whatever the other sequences are. The cost is one SDPA launch per sequence per layer (decode with large
batches pays the most; prefill calls are large anyway). Equal-length prompts (no padding), as in the invariance
contract: a padded row's mask is its own slice, but padding itself changes what a row computes.

On CPU it goes one step further and calls SDPA once per (sequence, query head) (`per_head_sdpa`, which the
tensor-parallel model of parallel_attention.py runs on every device): a call then has the same operands whatever the
batch and the number of heads, so the unsplit invariant model is, by construction, the tensor-parallel model's
baseline at every degree. Per sequence alone is not enough there: which CPU kernel SDPA picks depends on the head
counts of the call (torch 2.6-2.8's CPU flash kernel refuses query heads != KV heads, so a GQA call falls back to the
math backend, whose bits differ from the flash kernel that a one-head call gets). The cost on CPU is one SDPA call
per head per sequence; GPUs keep one call per sequence (docs/parallel.md: their baseline is the degree-1 model).

Registered with transformers' AttentionInterface as "nvfp4_invariant_sdpa"; `install_invariant_attention` switches a
model that uses "sdpa" (the default) to it. Other implementations (eager, flash_attention_2, flex) are left alone
with a warning: they are not known to be invariant.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

ATTENTION_NAME = "nvfp4_invariant_sdpa"


class _OneHead:
    """What sdpa_attention_forward reads of the attention module, for one query head over the KV head it reads.
    Made once per (is_causal, training) at import, so that torch.compile traces per_head_sdpa without a graph break."""

    num_key_value_groups = 1

    def __init__(self, is_causal: bool, training: bool) -> None:
        self.is_causal, self.training = is_causal, training


_ONE_HEAD = {(c, t): _OneHead(c, t) for c in (False, True) for t in (False, True)}


def per_head_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, L, D], key/value [B, Hkv, S, D] (Hq a multiple of Hkv) -> ([B, L, Hq, D], None), one SDPA call
    per sequence and query head: each call has one query head and the one KV head it reads, whatever the batch, the
    head counts and the tensor-parallel degree."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads = query.shape[0], query.shape[1]
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] != 1:
        raise ValueError(f"per_head_sdpa: the attention mask must be shared by the heads (dim 1 of size 1), got shape "
                         f"{tuple(attention_mask.shape)}")
    if kwargs.get("position_bias") is not None:
        raise ValueError("per_head_sdpa: a position_bias (one per head) is not supported")
    groups = heads // key.shape[1]
    one_head = _ONE_HEAD[bool(getattr(module, "is_causal", True)), bool(module.training)]
    rows = []
    for b in range(batch):
        mask = attention_mask
        if mask is not None and mask.dim() > 0 and mask.shape[0] == batch:
            mask = mask[b:b + 1]
        outs = []
        for h in range(heads):
            kv = h // groups
            out, _ = sdpa_attention_forward(one_head, query[b:b + 1, h:h + 1], key[b:b + 1, kv:kv + 1],
                                            value[b:b + 1, kv:kv + 1], mask, **kwargs)
            outs.append(out)
        rows.append(torch.cat(outs, dim=2))
    return torch.cat(rows, dim=0), None


def _heads_share_the_mask(attention_mask: torch.Tensor | None, kwargs: dict) -> bool:
    per_head_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] != 1
    return not per_head_mask and kwargs.get("position_bias") is None


def batch_invariant_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """One SDPA call per sequence; on CPU one per (sequence, query head) (module docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type == "cpu" and _heads_share_the_mask(attention_mask, kwargs):
        return per_head_sdpa(module, query, key, value, attention_mask, **kwargs)
    batch = query.shape[0]
    if batch == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    for b in range(batch):
        mask = attention_mask
        if mask is not None and mask.dim() > 0 and mask.shape[0] == batch:
            mask = mask[b:b + 1]
        out, _ = sdpa_attention_forward(module, query[b:b + 1], key[b:b + 1], value[b:b + 1], mask, **kwargs)
        outputs.append(out)
    return torch.cat(outputs, dim=0), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, batch_invariant_sdpa)


def _current_implementation(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def install_invariant_attention(model: nn.Module) -> bool:
    """Switch a transformers model from "sdpa" to "nvfp4_invariant_sdpa". Returns whether it was switched."""
    current = _current_implementation(model)
    if current == ATTENTION_NAME:
        return True
    if current != "sdpa":
        if current is not None:
            warnings.warn(
                f"nvfp4: attention implementation {current!r} is left as is; only 'sdpa' is replaced by the batch-"
                f"invariant {ATTENTION_NAME!r}, so this model's attention may not be batch invariant "
                "(docs/models.md)", stacklevel=3)
        return False
    _register()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION_NAME)
    else:  # older transformers: the attention modules read the config at call time
        model.config._attn_implementation = ATTENTION_NAME
    return True
