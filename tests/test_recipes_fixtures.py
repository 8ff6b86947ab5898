"""Our weight recipes against checkpoints written by the real tools (tests/fixtures/, see its README.md).

For every quantized Linear of each fixture, the bf16 source weight (tests/fixtures/tiny-llama-bf16) is
re-quantized with our recipe, using the per-tensor amax the tool used (the max over the fused group for q/k/v and
gate/up), and the packed e2m1 bytes, the e4m3 block-scale bytes and the global scale must equal the tool's exactly.
No tool is imported here: only torch, safetensors (or the small reader below) and nvfp4.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import nvfp4
from nvfp4.formats.compressed_tensors import compressed_tensors_encode_scale, decode_scale_for_encode
from nvfp4.formats.compressed_tensors import quantize_weight as quantize_compressed_tensors
from nvfp4.formats.modelopt import quantize_weight as quantize_modelopt
from conftest import fixture_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOURCE = FIXTURES / "tiny-llama-bf16"
# name -> (recipe, suffix of the packed weight, global-scale tensor suffix)
CHECKPOINTS = {
    "modelopt-nvfp4": ("modelopt", "weight", "weight_scale_2"),
    "ct-nvfp4": ("compressed-tensors", "weight_packed", "weight_global_scale"),
    "ct-nvfp4a16": ("compressed-tensors", "weight_packed", "weight_global_scale"),
}
N_LINEARS = 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head stays bf16 in all three
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))

_ST_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E4M3": torch.float8_e4m3fn,
    "I64": torch.int64,
}


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """safetensors.torch.load_file when installed, else a minimal reader of the (simple) format."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        pass
    else:
        return load_file(str(path))
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    body = memoryview(raw)[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = torch.frombuffer(bytearray(body[start:end]), dtype=torch.uint8)
        out[name] = buf.view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def _source_weights() -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_safetensors(SOURCE / "model.safetensors").items()}


def _group_amax(source: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """The amax the tools use for `module`: its own, or the max over its fused group (both tools do this)."""
    parent, leaf = module.rsplit(".", 1)
    members = next((g for g in FUSED if leaf in g), (leaf,))
    return torch.stack([source[f"{parent}.{m}.weight"].abs().amax() for m in members]).amax()


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _diff(ours: torch.Tensor, theirs: torch.Tensor) -> str:
    a, b = _bytes(ours), _bytes(theirs)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    bad = (a != b).nonzero()
    return f"{len(bad)} of {a.numel()} bytes differ, first at {bad[0].tolist()}: ours {a[tuple(bad[0])]:#04x} tool {b[tuple(bad[0])]:#04x}"


def _quantized_modules(ckpt: dict[str, torch.Tensor], packed_suffix: str) -> list[str]:
    mods = []
    for k, v in ckpt.items():
        if k.endswith("." + packed_suffix) and v.dtype == torch.uint8:
            mods.append(k[: -len(packed_suffix) - 1])
    return sorted(mods)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_recipe_bytes_equal_tool_bytes(name: str, record_property):
    recipe, packed_suffix, gs_suffix = CHECKPOINTS[name]
    source = _source_weights()
    ckpt = load_safetensors(fixture_dir(name) / "model.safetensors")
    modules = _quantized_modules(ckpt, packed_suffix)
    assert len(modules) == N_LINEARS, f"{name}: expected {N_LINEARS} quantized Linears, found {modules}"

    counts = defaultdict(int)
    failures = []
    for mod in modules:
        w = source[f"{mod}.weight"]
        assert w.dtype == torch.bfloat16
        amax = _group_amax(source, mod)
        packed, scale, gs = ckpt[f"{mod}.{packed_suffix}"], ckpt[f"{mod}.weight_scale"], ckpt[f"{mod}.{gs_suffix}"]
        assert scale.dtype == torch.float8_e4m3fn and gs.dtype == torch.float32, (mod, scale.dtype, gs.dtype)
        if recipe == "modelopt":
            t = quantize_modelopt(w, amax)
            assert gs.shape == torch.Size([]), gs.shape
            ours_gs, theirs_gs = t.global_scale, gs
        else:
            t = quantize_compressed_tensors(w, amax)
            assert gs.shape == torch.Size([1]), gs.shape
            # The stored encode value, exactly; and the container's reciprocal must give it back too.
            ours_gs, theirs_gs = compressed_tensors_encode_scale(amax, w.dtype), gs
            if not torch.equal(t.encode_global_scale.view(torch.int32), gs.view(torch.int32)):
                failures.append(f"{mod}: encode_global_scale {t.encode_global_scale.item()!r} != stored {gs.item()!r}")
        if not torch.equal(t.data, packed):
            failures.append(f"{mod}: data {_diff(t.data, packed)}")
        if not torch.equal(_bytes(t.scale), _bytes(scale)):
            failures.append(f"{mod}: scale {_diff(t.scale, scale)}")
        if not torch.equal(ours_gs.reshape(-1).view(torch.int32), theirs_gs.reshape(-1).view(torch.int32)):
            failures.append(f"{mod}: global scale {ours_gs.item()!r} != {theirs_gs.item()!r}")
        counts["tensors"] += 3
        counts["data_bytes"] += packed.numel()
        counts["scale_bytes"] += scale.numel()
        counts["global_scales"] += 1
        counts["zero_block_scales"] += int((w.reshape(-1, 16).abs().amax(-1) == 0).sum())
        counts["neg_zero_weights"] += int(((w == 0) & torch.signbit(w)).sum())

    summary = f"{name}: compared {len(modules)} Linears, {dict(counts)}"
    print(summary)
    record_property("compared", dict(counts))
    assert not failures, summary + "\n" + "\n".join(failures)
    # Not vacuous: all Linears, every byte, and the hard cases are present.
    assert counts["data_bytes"] == 2 * 147456 // 2 and counts["scale_bytes"] == 2 * 147456 // 16
    assert counts["zero_block_scales"] > 0 and counts["neg_zero_weights"] > 0


def test_fused_shards_share_global_scale():
    """Both tools give q/k/v and gate/up one global scale (the premise of _group_amax)."""
    for name, (_, _, gs_suffix) in CHECKPOINTS.items():
        ckpt = load_safetensors(fixture_dir(name) / "model.safetensors")
        for layer in range(2):
            for group, parent in ((FUSED[0], "self_attn"), (FUSED[1], "mlp")):
                vals = {ckpt[f"model.layers.{layer}.{parent}.{m}.{gs_suffix}"].item() for m in group}
                assert len(vals) == 1, (name, layer, group, vals)


def test_recipes_differ_on_fixtures():
    """The two recipes are not interchangeable: count the bytes that differ on the same source weights."""
    source = _source_weights()
    data_diff = scale_diff = data_total = scale_total = 0
    for key, w in sorted(source.items()):
        if not key.endswith("proj.weight"):
            continue
        mod = key[: -len(".weight")]
        amax = _group_amax(source, mod)
        a, b = quantize_modelopt(w, amax), quantize_compressed_tensors(w, amax)
        data_diff += int((a.data != b.data).sum())
        scale_diff += int((_bytes(a.scale) != _bytes(b.scale)).sum())
        data_total += a.data.numel()
        scale_total += a.scale.numel()
    print(f"modelopt vs compressed-tensors: data {data_diff}/{data_total} bytes differ, scales {scale_diff}/{scale_total}")
    assert data_total == 147456 and scale_total == 2 * 147456 // 16
    assert data_diff > 0 and scale_diff > 0


def test_decode_scale_for_encode_roundtrip_count():
    """How often the stored fp32 encode scale (a bf16 value) is reachable as fp32(1 / decode).

    Measured over every positive bf16 value in [2^-60, 2^60]: fp32(1/G) roundtrips exactly when some fp32 value
    does (searching 8 ulps either side), and the number with no fp32 reciprocal at all is reported.
    """
    bits = torch.arange(0x0001, 0x7F80, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    g = bits.float()
    g = g[(g >= 2.0**-60) & (g <= 2.0**60)]
    d = 1.0 / g
    exists = torch.zeros_like(g, dtype=torch.bool)
    for k in range(-8, 9):
        exists |= (1.0 / (d.view(torch.int32) + k).view(torch.float32)) == g
    direct = (1.0 / d) == g
    # decode_scale_for_encode returns fp32(1/G): it is exact whenever any fp32 reciprocal is.
    assert torch.equal(direct, exists)
    for value in g[direct][::97].tolist():
        assert (1.0 / decode_scale_for_encode(torch.tensor([value]))).item() == value
    impossible = int((~exists).sum())
    print(f"bf16 encode scales in [2^-60, 2^60]: {g.numel()}, fp32(1/fp32(1/G)) != G for {int((~direct).sum())}, "
          f"no fp32 reciprocal at all for {impossible}")
    assert impossible > 0  # the reason NvFp4Tensor cannot always carry the encode value as a reciprocal


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quantize_gives_the_same_bytes_for_cuda_weights():
    from conftest import wide_spread

    w = wide_spread(40, 96, seed=21)
    for recipe in ("modelopt", "compressed-tensors"):
        cpu, gpu = nvfp4.quantize(w, recipe=recipe), nvfp4.quantize(w.cuda(), recipe=recipe)
        assert gpu.data.is_cuda
        assert torch.equal(gpu.data.cpu(), cpu.data) and torch.equal(gpu.scale.cpu().view(torch.uint8), cpu.scale.view(torch.uint8))
        assert torch.equal(gpu.global_scale.cpu(), cpu.global_scale)
