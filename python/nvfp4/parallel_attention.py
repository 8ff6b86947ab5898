"""Attention with its heads split across tensor-parallel ranks.

A rank keeps query heads [q0, q1) and the key/value heads they read (parallel_plan.head_split); the attention module
itself is transformers' own, told how many query heads share a local KV head.

Invariant mode runs SDPA once per (sequence, query head): each call then sees exactly the operands it would see at
any tensor-parallel degree and in any batch, so the kernel choices (which on GPUs depend on batch x heads and on the
query-heads-per-KV-head packing of decode) are the same, and with them the bits. It is the batch-invariant SDPA of
invariant_attention.py taken one step further, from sequences to heads (on CPU that one runs per_head_sdpa too, so the
unsplit invariant model is the baseline of every degree by construction); it costs one SDPA call per head per
sequence.
"""

from __future__ import annotations

import warnings

from torch import nn

from .invariant_attention import ATTENTION_NAME as SEQUENCE_ATTENTION_NAME
from .invariant_attention import per_head_sdpa  # noqa: F401  (nvfp4.parallel's public name)
from .parallel_plan import HeadSplit

ATTENTION_NAME = "nvfp4_tp_invariant_sdpa"


def shard_attention(attention: nn.Module, split: HeadSplit) -> None:
    """Tells a transformers attention module that it holds this rank's heads (its projections are replaced by the
    caller): the query heads per local KV head, and the head counts where the module keeps them."""
    attention.num_key_value_groups = split.groups
    for attr, value in (("num_heads", split.q1 - split.q0), ("num_key_value_heads", split.kv1 - split.kv0)):
        if hasattr(attention, attr):
            setattr(attention, attr, value)


def install_per_head_attention(model: nn.Module) -> bool:
    """Switches a model from "sdpa" (or the per-sequence invariant SDPA) to per_head_sdpa. Returns whether it did."""
    from transformers import AttentionInterface

    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None) if config is not None else None
    if current == ATTENTION_NAME:
        return True
    if current not in ("sdpa", SEQUENCE_ATTENTION_NAME):
        warnings.warn(
            f"nvfp4.parallel: attention implementation {current!r} is left as is; only 'sdpa' is replaced by the "
            f"per-head invariant {ATTENTION_NAME!r}, so this model's attention may change with the batch and the "
            f"tensor-parallel degree (docs/parallel.md)", stacklevel=3)
        return False
    AttentionInterface.register(ATTENTION_NAME, per_head_sdpa)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION_NAME)
    else:  # older transformers: the attention modules read the config at call time
        model.config._attn_implementation = ATTENTION_NAME
    return True
