"""quantize_model -> save_pretrained -> from_pretrained for mixture-of-experts models, in both checkpoint formats:
the tools' own bytes for every expert (tests/fixtures/README.md), their configs, the round trip, the logits."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
if not hasattr(pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe"), "Qwen3MoeExperts"):
    pytest.skip("transformers < 5 holds MoE experts as per-expert nn.Linear modules, not fused experts modules",
                allow_module_level=True)

import nvfp4  # noqa: E402
from nvfp4.cli import needle_run  # noqa: E402
from nvfp4.loading import read_tensors  # noqa: E402
from nvfp4.moe import NvFp4Experts  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_moe_fixtures import calibration_ids  # noqa: E402  (the data the tools calibrated on)

FORMATS = {"modelopt": "modelopt-nvfp4", "compressed-tensors": "ct-nvfp4"}
FAMILIES = ("qwen3moe", "deepseekv3")
ACTIVATION_KEYS = ("input_scale", "input_global_scale")
# The torch the tools calibrated with (tests/fixtures/README.md). Activation scales come from the bf16 forward of the
# calibration data, whose CPU kernels round differently in other torch versions; with another torch they are held
# to a few bf16 steps of the tools' values instead of their bytes.
TOOLS_TORCH = (2, 13)
OTHER_TORCH_SCALE_RTOL = 0.03


_BF16: dict[str, torch.nn.Module] = {}
_CALIBRATED: dict[tuple[str, str], torch.nn.Module] = {}


def _bf16(family: str):
    """A fresh copy of the bf16 source model (loaded once per session: copying is faster than loading)."""
    if family not in _BF16:
        _BF16[family] = transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / f"tiny-{family}-bf16",
                                                                          dtype=torch.bfloat16).eval()
    return copy.deepcopy(_BF16[family])


def _calibrated(family: str, fmt: str):
    """quantize_model of the bf16 model with `fmt`'s recipe on the tools' calibration data (made once; read only)."""
    if (family, fmt) not in _CALIBRATED:
        _CALIBRATED[family, fmt] = nvfp4.quantize_model(_bf16(family), calibration=_tool_calibration(), recipe=fmt)
    return _CALIBRATED[family, fmt]


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _tool_calibration() -> list[torch.Tensor]:
    return [row.unsqueeze(0) for row in calibration_ids()]  # one sequence per batch, as the fixture script ran them


def _torch_version() -> tuple[int, int]:
    return tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def _compare(ours: dict[str, torch.Tensor], tool: dict[str, torch.Tensor], keys) -> list[str]:
    """Keys whose tensors differ. Quantized tensors must match in dtype and bytes. Unquantized ones must hold the
    same values: DeepSeek's router weight is float32 in the transformers the tests run (5.25 keeps it so) and
    bf16 in the one the tools ran (5.17)."""
    bad = []
    for k in keys:
        a, b = ours[k], tool[k]
        if k.endswith(ACTIVATION_KEYS) and _torch_version() != TOOLS_TORCH:
            same = a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=OTHER_TORCH_SCALE_RTOL, atol=0)
        elif a.dtype in (torch.uint8, torch.float8_e4m3fn) or k.endswith(("scale", "scale_2")):
            same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bytes(a), _bytes(b))
        else:
            same = a.shape == b.shape and torch.equal(a.float(), b.float())
        if not same:
            bad.append(k)
    return bad


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_quantize_model_reproduces_the_tools_weight_bytes(tmp_path, family, fmt):
    """Every weight tensor we write, every expert's included, equals the one the real tool wrote for the same
    bf16 model; so do the names, dtypes and shapes (activation scales aside: weight_only=True)."""
    model = nvfp4.quantize_model(_bf16(family), weight_only=True, recipe=fmt)
    assert any(isinstance(m, NvFp4Experts) for m in model.modules())
    nvfp4.save_pretrained(model, tmp_path, format=fmt)
    ours, tool = read_tensors(tmp_path), read_tensors(FIXTURES / f"{family}-{FORMATS[fmt]}")
    assert set(ours) == {k for k in tool if not k.endswith(ACTIVATION_KEYS)}
    assert not _compare(ours, tool, ours)
    assert sum(".experts." in k for k in ours) == 8 * 3 * 3 * (2 if family == "qwen3moe" else 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_modelopt_calibration_reproduces_every_tensor(tmp_path, family):
    """Calibrated on the tool's data, ModelOpt's input scales come out byte-identical too (with the tools' torch): the
    experts' shared per-projection input quantizers (tokens routed to each expert) as well as the Linears'."""
    nvfp4.save_pretrained(_calibrated(family, "modelopt"), tmp_path, format="modelopt")
    ours, tool = read_tensors(tmp_path), read_tensors(FIXTURES / f"{family}-modelopt-nvfp4")
    assert set(ours) == set(tool)
    assert not _compare(ours, tool, ours)
    assert sum(k.endswith("input_scale") and ".experts." in k for k in ours) == 8 * 3 * (2 if family == "qwen3moe" else 1)


def test_compressed_tensors_calibration_layout():
    """llm-compressor sends every calibration token through every expert and keeps one observer per expert
    Linear: gate/up input scales agree across the experts of a layer, down's differ, in our output as in the
    tool's. (The values are not the tool's, for dense Linears neither: e.g. layer 0's o_proj input_global_scale
    is 478 here and 736 in the tool's checkpoint, while ModelOpt's o_proj input_scale on the same data equals
    ours bit for bit; llm-compressor's calibration pipeline does not see a plain bf16 forward's activations.)"""
    model = _calibrated("qwen3moe", "compressed-tensors")
    tool = read_tensors(FIXTURES / "qwen3moe-ct-nvfp4")
    for layer in range(2):
        experts = model.model.layers[layer].mlp.experts
        for proj in ("gate_proj", "up_proj", "down_proj"):
            ours = experts.projections()[proj].input_scale
            theirs = [float(tool[f"model.layers.{layer}.mlp.experts.{e}.{proj}.input_global_scale"]) for e in range(8)]
            shared = proj != "down_proj"
            assert (len(set(ours.tolist())) == 1) == shared and (len(set(theirs)) == 1) == shared, (layer, proj)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_configs_match_the_tools(tmp_path, family):
    nvfp4.save_pretrained(_calibrated(family, "compressed-tensors"), tmp_path / "ct", format="compressed-tensors")
    ours = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    tool = json.loads((FIXTURES / f"{family}-ct-nvfp4" / "config.json").read_text())["quantization_config"]
    assert ours == tool  # the routers are in `ignore`, in module order, before lm_head
    nvfp4.save_pretrained(_calibrated(family, "modelopt"), tmp_path / "mo", format="modelopt")
    ours = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())
    tool = json.loads((FIXTURES / f"{family}-modelopt-nvfp4" / "hf_quant_config.json").read_text())
    assert ours["quantization"] == tool["quantization"]  # exclude_modules sorted, routers included
    cfg = json.loads((tmp_path / "mo" / "config.json").read_text())["quantization_config"]
    ref = json.loads((FIXTURES / f"{family}-modelopt-nvfp4" / "config.json").read_text())["quantization_config"]
    assert {k: v for k, v in cfg.items() if k != "producer"} == {k: v for k, v in ref.items() if k != "producer"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_identical_buffers(tmp_path, fmt):
    model = _calibrated("deepseekv3", fmt)
    nvfp4.save_pretrained(model, tmp_path, format=fmt)
    again = nvfp4.from_pretrained(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(_bytes(a[k]), _bytes(b[k])), k
    nvfp4.save_pretrained(again, tmp_path / "again", format=fmt)  # exact encode scales kept per expert
    first, second = read_tensors(tmp_path), read_tensors(tmp_path / "again")
    assert first.keys() == second.keys() and all(torch.equal(_bytes(first[k]), _bytes(second[k])) for k in first)
    ids = torch.randint(4, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


_NATURAL: dict[str, torch.nn.Module] = {}


def _natural_model(family: str):
    """A seeded random MoE model with natural (not doctored) weights; router weights N(0, 0.5^2) so that routing
    has margins, as in the fixtures (built once; read only)."""
    if family not in _NATURAL:
        _NATURAL[family] = _build_natural_model(family)
    return _NATURAL[family]


def _build_natural_model(family: str):
    torch.manual_seed(0)
    common = dict(vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_experts_per_tok=2, norm_topk_prob=True)
    if family == "qwen3moe":
        model = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
            **common, num_key_value_heads=2, head_dim=32, num_experts=8))
    else:
        model = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(
            **common, num_key_value_heads=4, first_k_dense_replace=1, n_routed_experts=8, n_shared_experts=1,
            n_group=2, topk_group=1, q_lora_rank=64, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=32,
            v_head_dim=32))
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("mlp.gate"):
                module.weight.normal_(0, 0.5)
            elif name.endswith("mlp.experts"):
                module.gate_up_proj.normal_(0, 0.02)
                module.down_proj.normal_(0, 0.02)
    return model


# Measured (torch 2.13 CPU), cosine of the logits with the bf16 model: Qwen3-MoE 0.971 (per-token), 0.972
# (static, ModelOpt), 0.972 (static, compressed-tensors), 0.983 (W4A16); DeepSeek-V3 0.971, 0.973, 0.974, 0.985.
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kwargs, floor", [
    (dict(), 0.96),
    (dict(calibration="ids"), 0.96),
    (dict(calibration="ids", recipe="compressed-tensors"), 0.96),
    (dict(weight_only=True), 0.975),
])
def test_logits_close_to_bf16_with_natural_weights(family, kwargs, floor):
    model = _natural_model(family)
    ids = torch.randint(4, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    kwargs = {k: ([ids] if v == "ids" else v) for k, v in kwargs.items()}
    quantized = nvfp4.quantize_model(copy.deepcopy(model), **kwargs)
    with torch.no_grad():
        ref, out = model(ids).logits.double(), quantized(ids).logits.double()
    cos = float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0))
    assert floor < cos < 0.9999, cos


def test_quantize_model_batch_invariant_moe_needle():
    model = nvfp4.quantize_model(_bf16("qwen3moe"), batch_invariant=True)  # per-token activation scales
    assert model.nvfp4_meta["invariant_routers"] == ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
    assert model.nvfp4_meta["quantized"][-2:] == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    rows = needle_run(model, vocab=(4, 256), sizes=[1, 4, 15], seed=4, new_tokens=0)
    assert all(r["logits_equal"] for r in rows), rows


def test_partial_expert_ignore_raises():
    with pytest.raises(ValueError, match="ignore matches only some expert projections of model.layers.0.mlp.experts"):
        nvfp4.quantize_model(_bf16("qwen3moe"), ignore=("lm_head", r"re:.*layers\.0\.mlp\.experts\.3\."))
    model = nvfp4.quantize_model(_bf16("qwen3moe"), ignore=("lm_head", "model.layers.0.mlp.experts"), weight_only=True)
    assert not isinstance(model.model.layers[0].mlp.experts, NvFp4Experts)
    assert isinstance(model.model.layers[1].mlp.experts, NvFp4Experts)
    with pytest.raises(ValueError, match=r"experts of \['model.layers.0.mlp.experts'\] are not quantized"):
        nvfp4.save_pretrained(model, "/nonexistent-not-written")
