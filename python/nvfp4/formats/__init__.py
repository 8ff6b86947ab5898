"""The checkpoint-format registry: one module per format owns its detection, reading, writing and weight recipe.

Each format module provides NAME, LAYER_KEYS, detect(path, config) -> QuantSpec | None, is_quantized_on_disk,
read_layer, remember, write_layer, write_config, quantize_weight (the tool's recipe, byte-identical) and
input_scale (the static input scale the tool stores for a calibrated amax). Loading, saving and quantize_model call
these; nothing else branches on the format. Adding a format = one module here and one entry in REGISTRY.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from . import compressed_tensors, modelopt
from .base import UNSUPPORTED_SUFFIXES, QuantSpec, UnsupportedCheckpointError

# Detection order: ModelOpt first, so that its hf_quant_config.json wins over a config.json entry.
REGISTRY: tuple[ModuleType, ...] = (modelopt, compressed_tensors)
NAMES: tuple[str, ...] = tuple(f.NAME for f in REGISTRY)

__all__ = ["NAMES", "QuantSpec", "REGISTRY", "UNSUPPORTED_SUFFIXES", "UnsupportedCheckpointError", "detect", "get"]


def get(name: str, what: str = "format") -> ModuleType:
    for f in REGISTRY:
        if f.NAME == name:
            return f
    raise ValueError(f"{what} must be one of {NAMES}, got {name!r}")


def detect(path: Path, config: dict[str, Any]) -> QuantSpec:
    """The quantization a checkpoint folder's config describes, read by the format that recognises it."""
    for f in REGISTRY:
        spec = f.detect(path, config)
        if spec is not None:
            return spec
    qc = config.get("quantization_config")
    if qc is None:
        raise UnsupportedCheckpointError(f"{path}: no quantization_config in config.json and no hf_quant_config.json")
    raise UnsupportedCheckpointError(
        f"quant_method {qc.get('quant_method')!r} is not supported (supported: {', '.join(NAMES)} NVFP4)")
