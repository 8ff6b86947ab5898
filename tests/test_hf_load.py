"""nvfp4.from_pretrained on the real-tool fixtures (tests/fixtures/): bytes, dequantization, logits, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import nvfp4  # noqa: E402
from nvfp4.formats.compressed_tensors import ENCODE_ATTR as CT_ENCODE_ATTR  # noqa: E402
from nvfp4.module_tree import matches  # noqa: E402
from nvfp4.format import e2m1_values, unpack_e2m1  # noqa: E402
from nvfp4.loading import read_tensors  # noqa: E402
from nvfp4.formats.compressed_tensors import decode_scale_for_encode  # noqa: E402
from conftest import fixture_dir  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINTS = {"modelopt-nvfp4": "static", "ct-nvfp4": "static", "ct-nvfp4a16": "none"}


@pytest.fixture(scope="module")
def loaded():
    return {name: nvfp4.from_pretrained(fixture_dir(name)) for name in CHECKPOINTS}


def _layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nvfp4.NvFp4Linear)}


def _tool_dequant(fmt: str, t: dict, name: str) -> torch.Tensor:
    """The tool's own dequantization formula applied to the checkpoint tensors, to bf16 (the model dtype).
    ModelOpt NVFP4QTensor.dequantize: e2m1 * (scale.float() * weight_scale_2); compressed-tensors
    NVFP4PackedCompressor.decompress -> dequantize: e2m1 * (scale.float() / weight_global_scale)."""
    packed = t[f"{name}.weight" if fmt == "modelopt" else f"{name}.weight_packed"]
    scale = t[f"{name}.weight_scale"].float()
    block = scale * t[f"{name}.weight_scale_2"] if fmt == "modelopt" else scale / t[f"{name}.weight_global_scale"]
    n, k = packed.shape[0], packed.shape[1] * 2
    v = e2m1_values(unpack_e2m1(packed)).reshape(n, k // 16, 16)
    return (v * block.unsqueeze(-1)).reshape(n, k).to(torch.bfloat16)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_layers_hold_the_checkpoint_bytes_and_decode_scales(loaded, name):
    model, t = loaded[name], read_tensors(fixture_dir(name))
    layers = _layers(model)
    assert len(layers) == 14 and not any(isinstance(m, torch.nn.Linear) and n != "lm_head" for n, m in model.named_modules() if n in layers)
    ct = name.startswith("ct")
    for n, layer in layers.items():
        assert layer.activation == CHECKPOINTS[name]
        weight, weight_scale = layer.modelopt_weights()
        assert torch.equal(weight, t[f"{n}.weight_packed" if ct else f"{n}.weight"])
        assert torch.equal(weight_scale.view(torch.uint8), t[f"{n}.weight_scale"].view(torch.uint8))
        if ct:  # encode -> decode with the documented reciprocal rule; exact encode kept for saving
            assert torch.equal(layer.weight_scale_2, decode_scale_for_encode(t[f"{n}.weight_global_scale"]))
            assert getattr(layer, CT_ENCODE_ATTR)["weight_global_scale"] == float(t[f"{n}.weight_global_scale"])
            if layer.activation == "static":
                assert torch.equal(layer.input_scale, decode_scale_for_encode(t[f"{n}.input_global_scale"]))
        else:
            assert torch.equal(layer.weight_scale_2, t[f"{n}.weight_scale_2"])
            assert torch.equal(layer.input_scale, t[f"{n}.input_scale"])
        # fused shards share the global scale
    for parent in {n.rsplit(".", 1)[0] for n in layers}:
        for group in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
            scales = [layers[f"{parent}.{g}"].weight_scale_2 for g in group if f"{parent}.{g}" in layers]
            assert all(torch.equal(s, scales[0]) for s in scales)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_layers_dequantize_to_the_tools_dequantization(loaded, name):
    """The layer's weight (e2m1 * block scale * decode global scale, nvfp4.dequantize) equals the tool's formula
    on the checkpoint tensors, in the model dtype; in fp32 they agree to one rounding (the tools multiply, resp.
    divide, block scale and global scale first)."""
    model, t = loaded[name], read_tensors(fixture_dir(name))
    fmt = "compressed-tensors" if name.startswith("ct") else "modelopt"
    for n, layer in _layers(model).items():
        ours = nvfp4.dequantize(nvfp4.NvFp4Tensor(*layer.modelopt_weights(), layer.weight_scale_2), torch.float32)
        tool = _tool_dequant(fmt, t, n)
        assert torch.equal(ours.to(torch.bfloat16), tool), n
        assert torch.allclose(ours, tool.float(), rtol=2**-8, atol=0)


def _bf16_logits(ids, dequant_from=None):
    ref = transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-llama-bf16", dtype=torch.bfloat16).eval()
    if dequant_from is not None:
        with torch.no_grad():
            for n, layer in _layers(dequant_from).items():
                w = nvfp4.dequantize(nvfp4.NvFp4Tensor(*layer.modelopt_weights(), layer.weight_scale_2), torch.bfloat16)
                ref.get_submodule(n).weight.copy_(w)
    with torch.no_grad():
        return ref(ids).logits.float()


def test_logits_close_to_the_original_bf16_model(loaded):
    ids = torch.randint(4, 29, (2, 16), generator=torch.Generator().manual_seed(0))
    ref = _bf16_logits(ids)
    for name, model in loaded.items():
        with torch.no_grad():
            out = model(ids).logits.float()
        cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
        # The fixtures' weights are doctored (per-row spreads of 2^8, planted tiny/zero blocks) on a random model:
        # 4-bit quantization moves its logits a lot; transformers + compressed-tensors gives the same (models.md).
        assert cos > 0.75, (name, cos)
    # W4A16: exactly the bf16 model with dequantized weights, up to bf16 rounding of the matmul
    a16 = loaded["ct-nvfp4a16"]
    with torch.no_grad():
        out = a16(ids).logits.float()
    deq = _bf16_logits(ids, dequant_from=a16)
    assert (out - deq).abs().max() < 0.05
    assert torch.nn.functional.cosine_similarity(out.flatten(), deq.flatten(), dim=0) > 0.9999


@pytest.mark.parametrize("kwargs, floor", [
    (dict(), 0.96),                                            # W4A4, per-token activation scales
    (dict(calibration="ids"), 0.96),                           # W4A4, static scales (ModelOpt recipe)
    (dict(calibration="ids", recipe="compressed-tensors"), 0.96),
    (dict(weight_only=True), 0.975),                           # W4A16
])
def test_logits_close_to_bf16_with_natural_weights(kwargs, floor):
    """Without the fixtures' planted hard cases, NVFP4 logits stay close to the bf16 model's (measured on this
    seeded random Llama: cosine 0.978-0.979 for W4A4, 0.988 for W4A16; quantize_model writes the tools' bytes,
    test_hf_roundtrip.py). The upper bound makes sure quantization did happen."""
    import copy

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(4, 512, (4, 32), generator=torch.Generator().manual_seed(1))
    kwargs = {k: ([ids] if v == "ids" else v) for k, v in kwargs.items()}
    quantized = nvfp4.quantize_model(copy.deepcopy(model), **kwargs)
    with torch.no_grad():
        ref, out = model(ids).logits.double(), quantized(ids).logits.double()
    cos = float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0))
    assert floor < cos < 0.9999, cos


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(fixture_dir(name), dst)
    return dst


def _edit_config(path, fn):
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_unsupported_formats_raise(tmp_path):
    p = _copy(tmp_path, "ct-nvfp4")
    _edit_config(p, lambda c: c["quantization_config"]["config_groups"]["group_0"].update(format="mxfp4-pack-quantized"))
    with pytest.raises(nvfp4.UnsupportedCheckpointError, match="mxfp4"):
        nvfp4.from_pretrained(p)
    _edit_config(p, lambda c: c["quantization_config"]["config_groups"]["group_0"].update(format="nvfp4-pack-quantized"))
    _edit_config(p, lambda c: c["quantization_config"]["config_groups"]["group_0"]["input_activations"].update(dynamic=True))
    with pytest.raises(nvfp4.UnsupportedCheckpointError, match="dynamic"):
        nvfp4.from_pretrained(p)
    m = _copy(tmp_path, "modelopt-nvfp4")
    q = json.loads((m / "hf_quant_config.json").read_text())
    q["quantization"]["quant_algo"] = "FP8"
    (m / "hf_quant_config.json").write_text(json.dumps(q))
    with pytest.raises(nvfp4.UnsupportedCheckpointError, match="FP8"):
        nvfp4.from_pretrained(m)


def _rewrite_tensors(path, fn):
    from safetensors.torch import save_file

    t = read_tensors(path)
    fn(t)
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_and_mistyped_tensors_raise(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    _rewrite_tensors(p, lambda t: t.pop("model.layers.1.mlp.up_proj.input_scale"))
    with pytest.raises(ValueError, match="up_proj.input_scale is missing"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "b", "modelopt-nvfp4")
    _rewrite_tensors(p, lambda t: t.update({"model.layers.0.self_attn.o_proj.weight_scale": t["model.layers.0.self_attn.o_proj.weight_scale"].float()}))
    with pytest.raises(TypeError, match="weight_scale"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "c", "ct-nvfp4")
    _rewrite_tensors(p, lambda t: t.update({"model.layers.0.mlp.down_proj.weight_packed": t["model.layers.0.mlp.down_proj.weight_packed"].to(torch.int8)}))
    with pytest.raises(TypeError, match="uint8"):
        nvfp4.from_pretrained(p)
    # a Linear the config says is quantized but the checkpoint holds in bf16
    p = _copy(tmp_path / "d", "ct-nvfp4")
    src = read_tensors(FIXTURES / "tiny-llama-bf16")

    def unquantize(t):
        for s in ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"):
            t.pop(f"model.layers.0.self_attn.o_proj.{s}")
        t["model.layers.0.self_attn.o_proj.weight"] = src["model.layers.0.self_attn.o_proj.weight"]

    _rewrite_tensors(p, unquantize)
    with pytest.raises(TypeError, match="unquantized"):
        nvfp4.from_pretrained(p)
    # ... and a quantized layer the config ignores
    p = _copy(tmp_path / "e", "ct-nvfp4")
    _edit_config(p, lambda c: c["quantization_config"]["ignore"].append("re:.*o_proj$"))
    with pytest.raises(ValueError, match="excludes"):
        nvfp4.from_pretrained(p)


def test_ignore_patterns():
    lin = torch.nn.Linear(16, 16)
    assert matches("lm_head", "lm_head")
    assert not matches("model.lm_head", "lm_head")
    assert matches("model.lm_head", "lm_head", suffix=True)
    assert matches("model.layers.3.mlp.gate", "model.layers.*.mlp.gate")
    assert matches("model.layers.3.mlp.gate", "re:.*mlp\\.gate$")
    assert not matches("model.layers.3.mlp.gate_proj", "re:.*mlp\\.gate$")
    assert matches("anything", "Linear", lin)


def test_sharded_checkpoint(tmp_path, loaded):
    model = loaded["ct-nvfp4"]
    nvfp4.save_pretrained(model, tmp_path, format="compressed-tensors", max_shard_size=200_000)
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("model-*.safetensors"))) > 1
    again = nvfp4.from_pretrained(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].view(torch.uint8) if a[k].dtype == torch.float8_e4m3fn else a[k],
                           b[k].view(torch.uint8) if b[k].dtype == torch.float8_e4m3fn else b[k]), k
