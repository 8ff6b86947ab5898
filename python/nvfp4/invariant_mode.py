"""The batch-invariant mode's module replacements around the NVFP4 layers (from_pretrained and quantize_model with
batch_invariant=True)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .invariant_attention import install_invariant_attention
from .invariant_norm import install_invariant_rms_norms
from .invariant_ops import InvariantLinear
from .module_tree import set_module
from .moe_routing import install_invariant_routers


def install_invariant_modules(model: nn.Module) -> dict[str, Any]:
    """The batch-invariant mode's module replacements (from_pretrained and quantize_model with batch_invariant=True):
    every remaining (unquantized) nn.Linear becomes InvariantLinear, every Llama-formula RMSNorm becomes
    InvariantRMSNorm, mixture-of-experts routers become the invariant routers of moe_routing.py, and SDPA attention
    runs one sequence at a time. Returns what was installed, as the model's nvfp4_meta records it
    (no_invariant_modules() when nothing is)."""
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    for n in linears:
        set_module(model, n, InvariantLinear(model.get_submodule(n)))
    return {"invariant_linears": linears, "invariant_norms": install_invariant_rms_norms(model),
            "invariant_routers": install_invariant_routers(model),
            "invariant_attention": install_invariant_attention(model)}


def no_invariant_modules() -> dict[str, Any]:
    return {"invariant_linears": [], "invariant_norms": [], "invariant_routers": [], "invariant_attention": False}
