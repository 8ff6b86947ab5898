"""Names and places of modules in a model: replacing a module by its dotted name, the module-name patterns of the
checkpoint tools, the fused shard groups, and the attribute that records what nvfp4 did to a model."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from torch import nn

# Shards that inference engines fuse into one GEMM and that the tools give one global scale (DeepSeek's MLA
# q_a_proj and kv_a_proj_with_mqa read the same input: vLLM's fused_qkv_a_proj).
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"), ("q_a_proj", "kv_a_proj_with_mqa"))

# Attribute set on a converted/loaded model: what was done to it (read by save_pretrained).
MODEL_META_ATTR = "nvfp4_meta"


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name` by `new`."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def matches(name: str, pattern: str, module: nn.Module | None = None, *, suffix: bool = False) -> bool:
    """compressed-tensors / ModelOpt module patterns: "re:<regex>" (re.match on the module name), an exact name, a
    module class name (compressed-tensors targets such as "Linear"), or an fnmatch wildcard (ModelOpt's
    exclude_modules). With suffix=True (user-given ignore lists) a plain name also matches as the trailing
    components of a path ("lm_head" matches "model.lm_head")."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    if name == pattern or (suffix and name.endswith("." + pattern)):
        return True
    if module is not None and type(module).__name__ == pattern:
        return True
    return any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)


def matches_any(name: str, patterns: Iterable[str], module: nn.Module | None = None, *, suffix: bool = False) -> bool:
    return any(matches(name, p, module, suffix=suffix) for p in patterns)


def fused_group_of(name: str, names: Iterable[str]) -> tuple[str, ...]:
    """The names (among `names`) that form one fused group with `name` (itself alone if none)."""
    if "." in name:
        parent, leaf = name.rsplit(".", 1)
        prefix = parent + "."
    else:
        parent, leaf, prefix = "", name, ""
    available = set(names)
    for group in FUSED_GROUPS:
        if leaf in group:
            members = tuple(prefix + m for m in group if prefix + m in available)
            if name in members:
                return members
    return (name,)
