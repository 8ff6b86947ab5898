"""The checkpoint-format registry: one module per format owns its detection, reading, writing and weight recipe.

Each format module provides NAME, LAYER_KEYS, SIGNATURE_KEYS (tensor suffixes only it writes), detect(path, config)
-> QuantSpec | None, is_quantized_on_disk, read_layer, remember, write_layer, write_config, quantize_weight (the tool's recipe, byte-identical) and
input_scale (the static input scale the tool stores for a calibrated amax). Loading, saving and quantize_model call
these; nothing else branches on the format. Adding a format = one module here and one entry in REGISTRY.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from . import compressed_tensors, modelopt
from .base import UNSUPPORTED_SUFFIXES, QuantSpec, UnsupportedCheckpointError, config_object

# Detection order: ModelOpt first (its detect also refuses an hf_quant_config.json that disagrees with config.json).
REGISTRY: tuple[ModuleType, ...] = (modelopt, compressed_tensors)
NAMES: tuple[str, ...] = tuple(f.NAME for f in REGISTRY)

__all__ = ["NAMES", "QuantSpec", "REGISTRY", "UNSUPPORTED_SUFFIXES", "UnsupportedCheckpointError", "check_tensor_format",
           "detect", "get"]


def get(name: str, what: str = "format") -> ModuleType:
    for f in REGISTRY:
        if f.NAME == name:
            return f
    raise ValueError(f"{what} must be one of {NAMES}, got {name!r}")


def detect(path: Path, config: dict[str, Any]) -> QuantSpec:
    """The quantization a checkpoint folder's config describes, read by the format that recognises it."""
    qc = config.get("quantization_config")
    if qc is not None:
        config_object(qc, f"{path / 'config.json'}: quantization_config")
    for f in REGISTRY:
        spec = f.detect(path, config)
        if spec is not None:
            return spec
    if qc is None:
        raise UnsupportedCheckpointError(f"{path}: no quantization_config in config.json and no hf_quant_config.json")
    raise UnsupportedCheckpointError(
        f"{path / 'config.json'}: quant_method {qc.get('quant_method')!r} is not supported (supported: "
        f"{', '.join(NAMES)} NVFP4)")


def check_tensor_format(spec: QuantSpec, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuses tensors written by another format than the one the config names (e.g. a ModelOpt config over
    compressed-tensors tensors): the config and the tensors disagree, so neither can be trusted."""
    for f in REGISTRY:
        if f.NAME == spec.format:
            continue
        found = next((k for k in tensors if k.rsplit(".", 1)[-1] in f.SIGNATURE_KEYS), None)
        if found is not None:
            raise UnsupportedCheckpointError(
                f"{path}: the config describes a {spec.description} checkpoint but the tensors are in the "
                f"{f.NAME} format (e.g. {found}); the config and the tensors disagree")
