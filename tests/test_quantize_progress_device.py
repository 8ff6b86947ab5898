"""quantize_model's progress report (terminal vs log output, silence for quick work), and quantization on the model's
device: a GPU model's layers get the CPU recipe's bytes (the GPU test runs where a CUDA device is present)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import nvfp4
from nvfp4.progress import Progress
from conftest import wide_spread


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(progress: Progress, clock: _Clock, steps: int, step_s: float) -> None:
    for i in range(1, steps + 1):
        clock.now += step_s
        progress.update(i, f"layer{i}")
    progress.close()


def test_terminal_output_redraws_one_line():
    stream, clock = _Stream(tty=True), _Clock()
    _run(Progress(50, "quantize_model: layers", stream=stream, clock=clock), clock, 50, 1.0)
    text = stream.getvalue()
    assert text.count("\r") >= 40 and text.count("\n") == 1  # redrawn in place, one final newline
    assert "50/50" in text and "[" + "#" * 30 + "]" in text


def test_log_output_is_plain_lines_at_a_slow_pace():
    stream, clock = _Stream(tty=False), _Clock()
    _run(Progress(50, "quantize_model: layers", stream=stream, clock=clock, interval=10.0), clock, 50, 1.0)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()
    assert 4 <= len(lines) <= 6, lines  # 50 s of work: a line every 10 s, and the last one
    assert lines[-1].startswith("quantize_model: layers: [") and "50/50" in lines[-1]


def test_quick_work_prints_nothing_unless_asked():
    for enabled, expect_output in ((None, False), (True, True), (False, False)):
        stream, clock = _Stream(tty=True), _Clock()
        _run(Progress(10, "work", stream=stream, clock=clock, enabled=enabled), clock, 10, 0.01)
        assert bool(stream.getvalue()) == expect_output, enabled
    stream, clock = _Stream(tty=False), _Clock()  # long work with progress=False: still nothing
    _run(Progress(10, "work", stream=stream, clock=clock, enabled=False), clock, 10, 100.0)
    assert stream.getvalue() == ""


def _model(device="cpu") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    for i, (k, n) in enumerate([(64, 48), (48, 32), (32, 16)]):
        lin = nn.Linear(k, n, dtype=torch.bfloat16)
        with torch.no_grad():
            lin.weight.copy_(wide_spread(n, k, seed=i))
        model.add_module(f"l{i}", lin)
    return model.to(device)


def test_quantize_model_reports_progress_when_asked(capsys):
    nvfp4.quantize_model(_model(), ignore=(), progress=True)
    err = capsys.readouterr().err
    assert "quantize_model: layers" in err and "3/3" in err
    nvfp4.quantize_model(_model(), ignore=())
    assert capsys.readouterr().err == ""  # quick work, default: silent
    with pytest.raises(TypeError, match="progress must be True or False"):
        nvfp4.quantize_model(_model(), ignore=(), progress="yes")


def _layer_bytes(model: nn.Module) -> dict[str, bytes]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nvfp4.NvFp4Linear):
            for key, value in m.state_dict().items():
                out[f"{name}.{key}"] = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("recipe", ["modelopt", "compressed-tensors"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_quantize_on_the_gpu_gives_the_cpu_recipe_bytes(recipe, dtype):
    # (clamped so that float16 holds every value: an infinite amax is refused, on the CPU and the GPU alike)
    x = wide_spread(96, 512, seed=7, dtype=torch.float32).clamp(-3e4, 3e4).to(dtype)
    for amax in (None, 3.5, float(x.float().abs().amax()) * 1.7):
        cpu = nvfp4.quantize(x, amax=amax, recipe=recipe)
        gpu = nvfp4.quantize(x.cuda(), amax=amax, recipe=recipe)
        assert gpu.data.device.type == "cuda"
        for a, b in ((cpu.data, gpu.data), (cpu.scale, gpu.scale), (cpu.global_scale, gpu.global_scale)):
            assert torch.equal(a.reshape(-1).view(torch.uint8), b.cpu().reshape(-1).view(torch.uint8))
        if cpu.encode_scale is not None:
            assert torch.equal(cpu.encode_scale, gpu.encode_scale.cpu())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("recipe", ["modelopt", "compressed-tensors"])
def test_quantize_model_on_a_gpu_model_equals_the_cpu_bytes(recipe):
    calibration = [torch.randn(4, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)]
    cpu = nvfp4.quantize_model(_model(), ignore=(), recipe=recipe, calibration=calibration, backend="reference")
    gpu = nvfp4.quantize_model(_model("cuda"), ignore=(), recipe=recipe,
                               calibration=[b.cuda() for b in calibration], backend="reference")
    assert all(m.weight.device.type == "cuda" for m in gpu.modules() if isinstance(m, nvfp4.NvFp4Linear))
    assert _layer_bytes(cpu) == _layer_bytes(copy.deepcopy(gpu))


def test_quantize_model_checks_calibration_and_ignore():
    with pytest.raises(TypeError, match="calibration must be an iterable of batches .* got Tensor; wrap a single"):
        nvfp4.quantize_model(_model(), ignore=(), calibration=torch.randn(4, 64).to(torch.bfloat16))
    with pytest.raises(TypeError, match="calibration must be an iterable of batches .* got int"):
        nvfp4.quantize_model(_model(), ignore=(), calibration=5)
    with pytest.raises(TypeError, match="ignore must be module-name patterns"):
        nvfp4.quantize_model(_model(), ignore=5)
    with pytest.raises(TypeError, match=r"ignore must hold module-name patterns \(str\), got \[3\]"):
        nvfp4.quantize_model(_model(), ignore=["l0", 3])
    with pytest.raises(TypeError, match="batch_invariant must be True or False"):
        nvfp4.quantize_model(_model(), ignore=(), batch_invariant="no")
