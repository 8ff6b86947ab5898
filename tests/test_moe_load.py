"""nvfp4.from_pretrained on the real-tool mixture-of-experts fixtures (tests/fixtures/README.md): every expert's
bytes are the ones the tool wrote, they dequantize to the tool's own dequantization, the logits follow the bf16
model, and the experts' GEMMs equal NvFp4Linear's. Errors name the tensor."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
if not hasattr(pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe"), "Qwen3MoeExperts"):
    pytest.skip("transformers < 5 holds MoE experts as per-expert nn.Linear modules, not fused experts modules",
                allow_module_level=True)

import nvfp4  # noqa: E402
from nvfp4 import backends  # noqa: E402
from nvfp4.format import e2m1_values, unpack_e2m1  # noqa: E402
from nvfp4.formats.compressed_tensors import ENCODE_ATTR as CT_ENCODE_ATTR  # noqa: E402
from nvfp4.formats.compressed_tensors import decode_scale_for_encode  # noqa: E402
from nvfp4.loading import read_tensors  # noqa: E402
from nvfp4.moe import NvFp4Experts  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# fixture -> (activation mode, number of MoE layers)
CHECKPOINTS = {
    "qwen3moe-modelopt-nvfp4": ("static", 2), "qwen3moe-ct-nvfp4": ("static", 2), "qwen3moe-ct-nvfp4a16": ("none", 2),
    "deepseekv3-modelopt-nvfp4": ("static", 1), "deepseekv3-ct-nvfp4": ("static", 1),
    "deepseekv3-ct-nvfp4a16": ("none", 1),
}
NUM_EXPERTS = 8


@pytest.fixture(scope="module")
def loaded():
    return {name: nvfp4.from_pretrained(FIXTURES / name) for name in CHECKPOINTS}


def _experts(model) -> dict[str, NvFp4Experts]:
    return {n: m for n, m in model.named_modules() if isinstance(m, NvFp4Experts)}


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_experts_hold_the_checkpoint_bytes_and_decode_scales(loaded, name):
    model, t = loaded[name], read_tensors(FIXTURES / name)
    activation, moe_layers = CHECKPOINTS[name]
    experts = _experts(model)
    assert len(experts) == moe_layers
    assert not any(type(m).__name__.endswith("Experts") and not isinstance(m, NvFp4Experts) for m in model.modules())
    ct = "-ct-" in name
    compared = 0
    for n, module in experts.items():
        assert module.num_experts == NUM_EXPERTS and module.activation == activation
        for proj, layer in module.projections().items():
            weight, scale = layer.modelopt_weights()
            for e in range(NUM_EXPERTS):
                key = f"{n}.{e}.{proj}"
                assert torch.equal(weight[e], t[f"{key}.weight_packed" if ct else f"{key}.weight"]), key
                assert torch.equal(_bytes(scale[e]), _bytes(t[f"{key}.weight_scale"])), key
                view = layer.expert(e)
                if ct:  # encode -> decode by the documented reciprocal rule; the exact encode value kept for saving
                    assert torch.equal(layer.weight_scale_2[e], decode_scale_for_encode(t[f"{key}.weight_global_scale"]))
                    assert getattr(view, CT_ENCODE_ATTR)["weight_global_scale"] == float(t[f"{key}.weight_global_scale"])
                    if activation == "static":
                        assert torch.equal(layer.input_scale[e], decode_scale_for_encode(t[f"{key}.input_global_scale"]))
                else:
                    assert torch.equal(layer.weight_scale_2[e], t[f"{key}.weight_scale_2"])
                    assert torch.equal(layer.input_scale[e], t[f"{key}.input_scale"])
                if activation == "none":
                    assert layer.input_scale is None
                compared += 1
        # both tools give an expert's gate and up one global scale
        assert torch.equal(module.gate_proj.weight_scale_2, module.up_proj.weight_scale_2)
    assert compared == moe_layers * NUM_EXPERTS * 3
    # every tensor of the checkpoint is in the model: the per-expert ones in NvFp4Experts, the rest as before
    assert not [k for k in t if ".experts." in k and not any(k.startswith(f"{n}.") for n in experts)]


def _tool_dequant(ct: bool, t: dict, key: str) -> torch.Tensor:
    """The tool's dequantization of one expert projection, to bf16. ModelOpt NVFP4QTensor.dequantize:
    e2m1 * (scale.float() * weight_scale_2); compressed-tensors NVFP4PackedCompressor.decompress:
    e2m1 * (scale.float() / weight_global_scale)."""
    packed = t[f"{key}.weight_packed" if ct else f"{key}.weight"]
    scale = t[f"{key}.weight_scale"].float()
    block = scale / t[f"{key}.weight_global_scale"] if ct else scale * t[f"{key}.weight_scale_2"]
    n, k = packed.shape[0], packed.shape[1] * 2
    v = e2m1_values(unpack_e2m1(packed)).reshape(n, k // 16, 16)
    return (v * block.unsqueeze(-1)).reshape(n, k).to(torch.bfloat16)


def _dequantized(layer, e: int, dtype=torch.bfloat16) -> torch.Tensor:
    weight, scale = layer.modelopt_weights()
    return nvfp4.dequantize(nvfp4.NvFp4Tensor(weight[e], scale[e], layer.weight_scale_2[e]), dtype)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_experts_dequantize_to_the_tools_dequantization(loaded, name):
    model, t = loaded[name], read_tensors(FIXTURES / name)
    for n, module in _experts(model).items():
        for proj, layer in module.projections().items():
            for e in range(module.num_experts):
                tool = _tool_dequant("-ct-" in name, t, f"{n}.{e}.{proj}")
                assert torch.equal(_dequantized(layer, e), tool), f"{n}.{e}.{proj}"
                assert torch.allclose(_dequantized(layer, e, torch.float32), tool.float(), rtol=2**-8, atol=0)


_BF16: dict[str, torch.nn.Module] = {}


def _bf16_model(family: str, dequant_from=None):
    """A fresh copy of the bf16 source model (loaded once: copying is faster); with dequant_from, every quantized
    weight replaced by its dequantization."""
    if family not in _BF16:
        _BF16[family] = transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / f"tiny-{family}-bf16",
                                                                          dtype=torch.bfloat16).eval()
    ref = copy.deepcopy(_BF16[family])
    if dequant_from is not None:
        with torch.no_grad():
            for n, m in dequant_from.named_modules():
                if isinstance(m, nvfp4.NvFp4Linear):
                    w, s = m.modelopt_weights()
                    ref.get_submodule(n).weight.copy_(nvfp4.dequantize(nvfp4.NvFp4Tensor(w, s, m.weight_scale_2), torch.bfloat16))
                elif isinstance(m, NvFp4Experts):
                    fused = ref.get_submodule(n)
                    for e in range(m.num_experts):
                        fused.gate_up_proj[e].copy_(torch.cat([_dequantized(m.gate_proj, e), _dequantized(m.up_proj, e)]))
                        fused.down_proj[e].copy_(_dequantized(m.down_proj, e))
    return ref


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


# Measured (torch 2.13 CPU): cosine with the bf16 source model; the weights are doctored (per-row spreads of 2^8,
# planted zero/tiny/tie blocks, like the dense fixtures), so 4-bit weights move the logits a lot. W4A16 against the
# bf16 model whose weights are the tool's dequantized ones: Qwen3-MoE 0.999992, DeepSeek 0.99967 (one token's
# routing flips on a near tie there).
COSINE_FLOOR = {"qwen3moe": (0.89, 0.99998), "deepseekv3": (0.69, 0.9995)}


@pytest.mark.parametrize("family", ["qwen3moe", "deepseekv3"])
def test_logits_close_to_the_bf16_model(loaded, family):
    ids = torch.randint(4, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _bf16_model(family)(ids).logits
    floor, a16_floor = COSINE_FLOOR[family]
    for tool in ("modelopt-nvfp4", "ct-nvfp4", "ct-nvfp4a16"):
        with torch.no_grad():
            out = loaded[f"{family}-{tool}"](ids).logits
        cos = _cosine(out, ref)
        print(f"{family}-{tool}: cosine with the bf16 model {cos:.4f}")
        assert floor < cos < 0.9999, (tool, cos)
    a16 = loaded[f"{family}-ct-nvfp4a16"]
    with torch.no_grad():
        out, deq = a16(ids).logits, _bf16_model(family, dequant_from=a16)(ids).logits
    cos = _cosine(out, deq)
    print(f"{family}-ct-nvfp4a16: cosine with the bf16 model on the dequantized weights {cos:.6f}")
    assert cos > a16_floor, cos


@pytest.mark.parametrize("name", ["qwen3moe-modelopt-nvfp4", "qwen3moe-ct-nvfp4a16"])
def test_grouped_forward_equals_nvfp4linear_per_expert(loaded, name):
    """The default Backend.grouped_forward gives each row exactly what an NvFp4Linear of its expert gives it."""
    layer = _experts(loaded[name])["model.layers.0.mlp.experts"].down_proj
    counts = [5, 0, 1, 17, 0, 3, 2, 4]  # experts without rows, one row, many rows
    offsets = torch.tensor([0] + torch.tensor(counts).cumsum(0).tolist(), dtype=torch.int64)
    x = torch.randn(sum(counts), layer.in_features, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y = layer(x, offsets)
    for e, (lo, hi) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        if hi == lo:
            continue
        view = layer.expert(e)
        single = nvfp4.NvFp4Linear.from_quantized(
            nvfp4.NvFp4Tensor(view.weight, view.weight_scale, view.weight_scale_2), bias=None,
            input_scale=view.input_scale, activation=layer.activation)
        assert torch.equal(y[lo:hi], single(x[lo:hi])), e
    assert not torch.equal(y[:5], layer(x, torch.tensor([0, 0, 5, 6, 23, 23, 26, 28, 32]))[:5])  # expert 0 vs 1


@pytest.mark.parametrize("backend", [b.name for b in backends.KERNEL_BACKENDS])
def test_runtime_layout_of_stacked_experts_round_trips(loaded, backend):
    """On a device a kernel backend serves, each expert's weights are held in that backend's layout (its prepare,
    stacked); state_dict, modelopt_weights and every expert's view give the ModelOpt tensors back exactly. The
    layouts are CPU tensor transforms, so this runs without a GPU."""
    layer = copy.deepcopy(_experts(loaded["qwen3moe-ct-nvfp4"])["model.layers.0.mlp.experts"].down_proj)
    before = {k: _bytes(v).clone() for k, v in layer.state_dict().items()}
    weight, scale = layer.modelopt_weights()
    runtime = [backends.get(backend).prepare(weight[e], scale[e]) for e in range(layer.num_experts)]
    layer._to_layout(backends.get(backend))
    assert not torch.equal(_bytes(layer.weight_scale).flatten(), before["weight_scale"].flatten())  # a real change
    for e in range(layer.num_experts):
        view = layer.expert(e)
        assert torch.equal(view.weight, runtime[e][0]) and torch.equal(_bytes(view.weight_scale), _bytes(runtime[e][1]))
        sd = view.state_dict()
        assert torch.equal(sd["weight"], before["weight"][e]) and torch.equal(_bytes(sd["weight_scale"]), before["weight_scale"][e])
    after = layer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(_bytes(after[k]), before[k]) for k in before)


# --- errors ----------------------------------------------------------------------------------------------------


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def _rewrite_tensors(path: Path, fn) -> None:
    from safetensors.torch import save_file

    t = read_tensors(path)
    fn(t)
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_and_mistyped_expert_tensors_raise(tmp_path):
    key = "model.layers.1.mlp.experts.5.down_proj"
    p = _copy(tmp_path / "a", "qwen3moe-modelopt-nvfp4")
    _rewrite_tensors(p, lambda t: t.pop(f"{key}.input_scale"))
    with pytest.raises(ValueError, match=f"{key}.input_scale is missing"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "b", "qwen3moe-modelopt-nvfp4")
    _rewrite_tensors(p, lambda t: t.update({f"{key}.weight_scale": t[f"{key}.weight_scale"].float()}))
    with pytest.raises(TypeError, match=f"{key}.weight_scale must be float8_e4m3fn"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "c", "qwen3moe-ct-nvfp4")
    _rewrite_tensors(p, lambda t: t.update({f"{key}.weight_packed": t[f"{key}.weight_packed"][:, :16].contiguous()}))
    with pytest.raises(ValueError, match=rf"{key}.weight_packed must have shape \(128, 24\)"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "d", "qwen3moe-ct-nvfp4")
    _rewrite_tensors(p, lambda t: t.update({f"{key}.bias": torch.zeros(128, dtype=torch.bfloat16)}))
    with pytest.raises(nvfp4.UnsupportedCheckpointError, match=f"{key}.bias"):
        nvfp4.from_pretrained(p)


def test_partly_quantized_experts_raise(tmp_path):
    key = "model.layers.0.mlp.experts.3.up_proj"
    src = read_tensors(FIXTURES / "tiny-qwen3moe-bf16")
    p = _copy(tmp_path / "a", "qwen3moe-ct-nvfp4a16")

    def unquantize(t):
        for s in ("weight_packed", "weight_scale", "weight_global_scale"):
            t.pop(f"{key}.{s}")
        t[f"{key}.weight"] = src[f"{key}.weight"]

    _rewrite_tensors(p, unquantize)
    with pytest.raises(TypeError, match=f"{key} should be NVFP4"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "b", "qwen3moe-ct-nvfp4a16")
    cfg = json.loads((p / "config.json").read_text())
    cfg["quantization_config"]["ignore"].append(r"re:.*experts\.3\.up_proj$")
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"{key} holds NVFP4 tensors but the config excludes it"):
        nvfp4.from_pretrained(p)
    _rewrite_tensors(p, unquantize)  # now the config and the checkpoint agree on a partly quantized experts module
    with pytest.raises(nvfp4.UnsupportedCheckpointError, match=f"quantized and unquantized expert projections .*{key}"):
        nvfp4.from_pretrained(p)


def test_unquantized_experts_load_in_bf16(tmp_path):
    """A config that ignores the experts: their bf16 per-expert weights are fused into the module's parameters,
    as transformers' loader fuses them."""
    p = _copy(tmp_path, "qwen3moe-ct-nvfp4a16")
    src = read_tensors(FIXTURES / "tiny-qwen3moe-bf16")

    def unquantize_experts(t):
        for k in [k for k in t if ".experts." in k]:
            t.pop(k)
        t.update({k: v for k, v in src.items() if ".experts." in k})

    _rewrite_tensors(p, unquantize_experts)
    cfg = json.loads((p / "config.json").read_text())
    cfg["quantization_config"]["ignore"].append(r"re:.*\.experts\.")
    (p / "config.json").write_text(json.dumps(cfg))
    model = nvfp4.from_pretrained(p)
    assert not _experts(model)
    ref = _bf16_model("qwen3moe")
    for layer in range(2):
        ours, theirs = model.model.layers[layer].mlp.experts, ref.model.layers[layer].mlp.experts
        assert torch.equal(ours.gate_up_proj, theirs.gate_up_proj) and torch.equal(ours.down_proj, theirs.down_proj)
