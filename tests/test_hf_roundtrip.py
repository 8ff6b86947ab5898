"""quantize_model -> save_pretrained -> from_pretrained, for both checkpoint formats; the tools' own bytes; the
transformers + compressed-tensors loader on our output; torch.compile over the whole model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import nvfp4  # noqa: E402
from nvfp4.loading import read_tensors  # noqa: E402
from conftest import fixture_dir  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FORMATS = {"modelopt": "modelopt-nvfp4", "compressed-tensors": "ct-nvfp4"}


def _bf16():
    return transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-llama-bf16", dtype=torch.bfloat16).eval()


def _calibration():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, 29, (2, 16), generator=g) for _ in range(2)]


def _bytes(t):
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_quantize_model_reproduces_the_tools_weight_bytes(tmp_path, fmt):
    """Fused groups share the amax as in ModelOpt and llm-compressor: every weight tensor we write equals the one
    the real tool wrote for the same bf16 model (the fixtures)."""
    model = nvfp4.quantize_model(_bf16(), weight_only=True, recipe=fmt)
    nvfp4.save_pretrained(model, tmp_path, format=fmt)
    ours, tool = read_tensors(tmp_path), read_tensors(fixture_dir(FORMATS[fmt]))
    act_keys = {k for k in tool if k.endswith(("input_scale", "input_global_scale"))}
    assert set(ours) == set(tool) - act_keys
    for k in ours:
        assert ours[k].dtype == tool[k].dtype and ours[k].shape == tool[k].shape, k
        assert torch.equal(_bytes(ours[k]), _bytes(tool[k])), k


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_identical_buffers(tmp_path, fmt):
    model = nvfp4.quantize_model(_bf16(), calibration=_calibration(), recipe=fmt)
    nvfp4.save_pretrained(model, tmp_path, format=fmt)
    tool = read_tensors(fixture_dir(FORMATS[fmt]))
    ours = read_tensors(tmp_path)
    assert set(ours) == set(tool)  # names as the tool writes them, activation scales included
    assert all(ours[k].dtype == tool[k].dtype and ours[k].shape == tool[k].shape for k in ours)
    again = nvfp4.from_pretrained(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(_bytes(a[k]), _bytes(b[k])), k
    # second save gives the same files (exact encode scales kept)
    nvfp4.save_pretrained(again, tmp_path / "again", format=fmt)
    second = read_tensors(tmp_path / "again")
    assert all(torch.equal(_bytes(ours[k]), _bytes(second[k])) for k in ours)
    ids = torch.randint(4, 29, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_saved_configs_match_the_tools(tmp_path):
    import json

    model = nvfp4.quantize_model(_bf16(), calibration=_calibration(), recipe="compressed-tensors")
    nvfp4.save_pretrained(model, tmp_path / "ct", format="compressed-tensors")
    ours = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    tool = json.loads((FIXTURES / "ct-nvfp4" / "config.json").read_text())["quantization_config"]
    assert ours == tool
    nvfp4.save_pretrained(model, tmp_path / "mo", format="modelopt")
    ours = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())
    tool = json.loads((fixture_dir("modelopt-nvfp4") / "hf_quant_config.json").read_text())
    assert ours["quantization"] == tool["quantization"]
    cfg = json.loads((tmp_path / "mo" / "config.json").read_text())["quantization_config"]
    ref = json.loads((fixture_dir("modelopt-nvfp4") / "config.json").read_text())["quantization_config"]
    assert {k: v for k, v in cfg.items() if k != "producer"} == {k: v for k, v in ref.items() if k != "producer"}


def test_per_token_model_cannot_be_saved(tmp_path):
    model = nvfp4.quantize_model(_bf16())
    with pytest.raises(ValueError, match="per-token"):
        nvfp4.save_pretrained(model, tmp_path)


def test_transformers_compressed_tensors_loader_reads_our_output(tmp_path):
    pytest.importorskip("compressed_tensors")
    model = nvfp4.quantize_model(_bf16(), calibration=_calibration(), recipe="compressed-tensors")
    nvfp4.save_pretrained(model, tmp_path, format="compressed-tensors")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = nvfp4.from_pretrained(tmp_path)
    sd = theirs.state_dict()
    for n, m in ours.named_modules():
        if isinstance(m, nvfp4.NvFp4Linear):
            assert torch.equal(sd[f"{n}.weight_packed"], m.weight)
            assert torch.equal(sd[f"{n}.weight_scale"].view(torch.uint8), m.modelopt_weights()[1].view(torch.uint8))
    ids = torch.randint(4, 29, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = theirs(ids).logits.float(), ours(ids).logits.float()
    # compressed-tensors fake-quantizes activations with its own (bf16) recipe: close, not equal
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9


_TORCH_VERSION = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])


# Known limitation (docs/models.md): with torch 2.11's CPU Inductor (seen on the H100 machine's host CPU), the code for
# the bf16 ops outside NvFp4Linear (rotary, softmax) rounds differently from eager even with emulate_precision_casts;
# torch 2.13 (CI) matches eager bit for bit, and on the GPU the compiled model equals eager (test below). The NvFp4Linear layers themselves compile bitwise-equal on both (test_compile.py,
# test_gemm_sm90.py).
@pytest.mark.xfail(_TORCH_VERSION < (2, 13), reason="Inductor bf16 rounding of non-nvfp4 ops differs from eager before torch 2.13", strict=False)
def test_compiled_model_no_graph_breaks_and_bitwise_equal_to_eager():
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    model = nvfp4.from_pretrained(fixture_dir("modelopt-nvfp4"), batch_invariant=True)
    ids = torch.randint(4, 29, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
        explanation = torch._dynamo.explain(model)(ids, use_cache=False)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        # Inductor keeps bf16 intermediates in fp32 unless told to round like eager (RMSNorm, rotary, softmax)
        with inductor_config.patch(emulate_precision_casts=True):
            compiled = torch.compile(model, fullgraph=True)
            assert torch.equal(compiled(ids, use_cache=False).logits, eager)
            ids2 = torch.cat([ids[1:2], torch.randint(4, 29, (4, 16), generator=torch.Generator().manual_seed(5))])
            assert torch.equal(compiled(ids2, use_cache=False).logits[0], eager[1])
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["modelopt-nvfp4", "wide"])
def test_cuda_graph_and_compile_bitwise_equal_to_eager_gpu(name):
    from nvfp4.cli import bundled_model

    path = bundled_model(torch.device("cuda")) if name == "wide" else fixture_dir(name)
    model = nvfp4.from_pretrained(path, batch_invariant=True, device="cuda")
    ids = torch.randint(4, 29, (3, 16), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
        static_ids = ids.clone()
        model(static_ids, use_cache=False)  # warm up outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = model(static_ids, use_cache=False).logits
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, eager)
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        with inductor_config.patch(emulate_precision_casts=True):
            compiled = torch.compile(model, mode="reduce-overhead")
            for _ in range(3):
                out = compiled(ids, use_cache=False).logits
            assert torch.equal(out, eager)
