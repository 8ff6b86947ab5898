"""InvariantRMSNorm: the fixed-order RMSNorm (nvfp4/invariant_norm.py), its CUDA kernel, and its installation.

CPU: the reference against an independent float64 formula and an independent float32 (numpy) implementation of the
specified order; a sequential-sum variant differs from it (so bitwise equality below is a real test); a Python
emulation of the kernel's thread tree equals it; rows are batch independent; opcheck; installation by
from_pretrained / quantize_model; argument errors. GPU: kernel == CPU reference bitwise, rows of an M-row call ==
the M=1 call, strided rows, torch.compile and CUDA graphs == eager, and a record of HF's own behaviour.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

import nvfp4
from nvfp4 import _lib
from nvfp4.invariant_norm import (
    LLAMA_RMS_NORM_CLASSES, MAX_HIDDEN, InvariantRMSNorm, install_invariant_rms_norms, rms_norm_invariant,
    rms_norm_invariant_impl, rms_norm_reference, sqrt_rn,
)
from conftest import fixture_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HIDDEN = [1, 7, 128, 3000, 4096, 5120]
DTYPES = [torch.bfloat16, torch.float16]
EPS = 1e-6
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rows(rows: int, h: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random rows with wide per-row scales (2^U(-20, 20) for bf16; fp16's range allows 2^U(-8, 8))."""
    g = torch.Generator().manual_seed(seed)
    spread = 20.0 if dtype == torch.bfloat16 else 8.0
    scale = torch.exp2(torch.empty(rows, 1).uniform_(-spread, spread, generator=g))
    x = torch.randn(rows, h, generator=g) * scale
    x[:, : max(1, h // 50)] *= 16  # a few larger entries per row
    return x.to(dtype)


def _weight(h: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (1 + 0.5 * torch.randn(h, generator=g)).to(dtype)


def _mono(t: torch.Tensor) -> torch.Tensor:
    """16-bit float bits as integers that are monotone in the value (ulp distance = difference)."""
    u = t.view(torch.int16).to(torch.int32) & 0xFFFF
    return torch.where(u >= 0x8000, -(u & 0x7FFF), u)


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_mono(a) - _mono(b)).abs()


def _truth(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """The Llama formula in float64: y rounded once to the dtype, w * y rounded once."""
    xd = x.double()
    r = 1.0 / torch.sqrt((xd * xd).mean(-1, keepdim=True) + eps)
    y = (xd * r).to(x.dtype)
    return (w.double() * y.double()).to(x.dtype)


def _hf_norm(h: int, w: torch.Tensor, eps: float = EPS):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    m = LlamaRMSNorm(h, eps=eps).to(w.dtype)
    with torch.no_grad():
        m.weight.copy_(w)
    return m


def _spec_numpy(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """The specified order written independently with numpy float32 arrays (IEEE +, *, /, sqrt; no FMA)."""
    h = x.shape[-1]
    xf = x.float().numpy()
    p = 1
    while p < h:
        p *= 2
    sq = np.zeros((xf.shape[0], p), dtype=np.float32)
    sq[:, :h] = xf * xf
    n = p
    while n > 1:
        n //= 2
        sq = sq[:, :n] + sq[:, n : 2 * n]
    var = sq / np.float32(h)
    r = np.float32(1.0) / np.sqrt(var + np.float32(eps))
    assert r.dtype == np.float32
    y = xf * r
    if x.dtype == torch.float16:
        y16 = y.astype(np.float16)
        return torch.from_numpy((w.float().numpy() * y16.astype(np.float32)).astype(np.float16))
    y = torch.from_numpy(y).to(x.dtype)
    return (w.float() * y.float()).to(x.dtype)


def _total_fold(sq: torch.Tensor) -> torch.Tensor:
    h = sq.shape[-1]
    p = 1 << (h - 1).bit_length() if h > 1 else 1
    s = torch.nn.functional.pad(sq, (0, p - h))
    while s.shape[-1] > 1:
        half = s.shape[-1] // 2
        s = s[:, :half] + s[:, half:]
    return s


def _finish(x: torch.Tensor, w: torch.Tensor, total: torch.Tensor, eps: float) -> torch.Tensor:
    """Steps 3-4 of the order from a given fp32 sum of squares."""
    h = x.shape[-1]
    var = total / torch.full_like(total, float(h))
    s = sqrt_rn(var + torch.full_like(var, eps))
    r = torch.ones_like(s) / s
    return (w.float() * (x.float() * r).to(x.dtype).float()).to(x.dtype)


# --- the reference (CPU) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HIDDEN)
def test_reference_close_to_float64_and_to_hf(h, dtype):
    x, w = _rows(256, h, dtype, seed=h), _weight(h, dtype, seed=1)
    ours, truth, hf = rms_norm_reference(x, w, EPS), _truth(x, w, EPS), _hf_norm(h, w)(x)
    assert ours.dtype == dtype and ours.shape == x.shape
    # Both fp32 computations are within a couple of ulps of the float64 truth, and off it only in rare elements.
    for name, got in (("reference", ours), ("hf", hf)):
        ulps = _ulps(got, truth)
        assert int(ulps.max()) <= 2, (name, int(ulps.max()))
        assert float((ulps > 0).float().mean()) < 0.01, name
    assert int(_ulps(ours, hf).max()) <= 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", [1, 2, 7, 37, 128, 300, 3000, 4096])
def test_reference_equals_independent_numpy_spec(h, dtype):
    x, w = _rows(2000 if h < 1000 else 500, h, dtype, seed=100 + h), _weight(h, dtype, seed=2)
    assert torch.equal(rms_norm_reference(x, w, EPS).view(torch.int16), _spec_numpy(x, w, EPS).view(torch.int16))


def test_sqrt_rn_is_correctly_rounded():
    """fp32 roots of 2M random fp32 values (normal and subnormal) equal numpy's (hardware sqrtps, IEEE); torch's
    own CPU float32 sqrt is recorded, not required (it is not correctly rounded on every CPU)."""
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(1, 0x7F800000, (2_000_000,), generator=g, dtype=torch.int64).to(torch.int32)
    s = bits.view(torch.float32)
    want = torch.from_numpy(np.sqrt(s.numpy()))
    assert torch.equal(sqrt_rn(s), want)
    special = torch.tensor([0.0, float("inf"), 1.0, 4.0, 2.0], dtype=torch.float32)
    assert torch.equal(sqrt_rn(special), torch.from_numpy(np.sqrt(special.numpy())))
    assert torch.isnan(sqrt_rn(torch.tensor([float("nan")]))).all()
    print(f"\ntorch.sqrt float32 on CPU: {int((torch.sqrt(s) != want).sum())} of {s.numel()} not correctly rounded")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", [128, 3000, 4096])
def test_fold_order_matters(h, dtype):
    """A sequential fp32 sum differs from the fold-halves tree in some rows, down to the 16-bit outputs: bitwise
    equality with the reference therefore pins the order (a kernel summing in another order would fail)."""
    x, w = _rows(2000 if h < 1000 else 400, h, dtype, seed=7), _weight(h, dtype, seed=3)
    sq = x.float() * x.float()
    seq = torch.zeros(x.shape[0], 1)
    for i in range(h):
        seq = seq + sq[:, i : i + 1]
    fold = _total_fold(sq)
    assert (seq != fold).any()
    ref = rms_norm_reference(x, w, EPS)
    assert torch.equal(_finish(x, w, fold, EPS), ref)  # the helper reproduces the reference from the fold total
    assert not torch.equal(_finish(x, w, seq, EPS), ref)


@pytest.mark.parametrize("h", [1, 5, 16, 17, 33, 100, 256, 511, 1000, 3000, 8192, 20000, 65536])
def test_kernel_thread_tree_emulation_equals_fold_halves(h):
    """The CUDA kernel's tree, emulated: T = clamp(P/8, 32, 1024) threads, thread t holds t + T*j and folds its J
    values as a pairwise sum in bit-reversed j order, then the T partials fold in halves (smem, then shfl_down)."""
    rows = 6 if h > 10000 else 40
    x = _rows(rows, h, torch.bfloat16, seed=h + 5)
    sq = x.float() * x.float()
    p = 1 << (h - 1).bit_length() if h > 1 else 1
    threads = min(max(p // 8, 32), 1024)
    per = max(p // threads, 1)
    log = per.bit_length() - 1
    a = torch.nn.functional.pad(sq, (0, threads * per - h)).reshape(rows, per, threads)  # [row, j, t]
    stack: list[torch.Tensor | None] = [None] * (log + 1)
    for r in range(per):
        j = int(format(r, f"0{log}b")[::-1], 2) if log else 0
        v = a[:, j, :]
        level = 0
        while (r >> level) & 1:
            v = stack[level] + v
            level += 1
        stack[level] = v
    s = stack[log]
    while s.shape[-1] > 1:  # offsets T/2 ... 32 in shared memory, then 16 ... 1 by shuffles: the same fold
        half = s.shape[-1] // 2
        s = s[:, :half] + s[:, half:]
    assert torch.equal(s, _total_fold(sq))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HIDDEN)
def test_reference_rows_independent_of_batch(h, dtype):
    x, w = _rows(97, h, dtype, seed=11), _weight(h, dtype, seed=4)
    full = rms_norm_reference(x, w, EPS)
    for i in range(0, 97, 8):
        assert torch.equal(rms_norm_reference(x[i : i + 1], w, EPS), full[i : i + 1])
    assert torch.equal(rms_norm_reference(x.reshape(97, 1, h), w, EPS).reshape(97, h), full)
    assert torch.equal(rms_norm_invariant_impl(x[5:40], w, EPS), full[5:40])


def test_special_values_canonical_nan():
    h = 64
    x = _rows(6, h, torch.bfloat16, seed=9)
    x[0, 3] = float("inf")
    x[1, 5] = float("nan")
    x[2] = 0
    x[3, 7] = -float("nan")
    x[4, 0] = 3e38  # square overflows fp32
    w = _weight(h, torch.bfloat16, seed=5)
    out = rms_norm_reference(x, w, EPS)
    bits = out.view(torch.int16)
    nan = torch.isnan(out)
    assert nan[0].any() and nan[1].all() and nan[3].all()
    assert (bits[nan] == 0x7FC0).all()
    assert torch.equal(out[2], torch.zeros(h, dtype=torch.bfloat16))
    half = rms_norm_reference(x.half().nan_to_num(posinf=float("inf")), w.half(), EPS)
    assert (half.view(torch.int16)[torch.isnan(half)] == 0x7E00).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_cpu(dtype):
    for shape in ((5, 48), (2, 3, 7), (1, 1), (0, 16)):
        rows = int(np.prod(shape[:-1]))
        x = _rows(max(rows, 1), shape[-1], dtype, seed=3)[:rows].reshape(shape)
        w = _weight(shape[-1], dtype, seed=6)
        torch.library.opcheck(rms_norm_invariant, (x, w, EPS))


def test_module_matches_hf_interface():
    h = 96
    hf = _hf_norm(h, _weight(h, torch.bfloat16, seed=8), eps=1e-5)
    inv = InvariantRMSNorm(hf)
    assert inv.weight is hf.weight and inv.variance_epsilon == 1e-5 and inv.eps == 1e-5
    assert list(inv.state_dict()) == list(hf.state_dict()) == ["weight"]
    x = _rows(12, h, torch.bfloat16, seed=12).reshape(3, 4, h)
    with torch.no_grad():
        out = inv(x)
        assert out.shape == x.shape and torch.equal(out, rms_norm_reference(x, hf.weight, 1e-5))
        assert int(_ulps(out, hf(x)).max()) <= 2
        xt = x.transpose(0, 1)  # non-contiguous leading dims
        assert torch.equal(inv(xt), out.transpose(0, 1))

    class EpsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
            self.eps = 1e-3

    assert InvariantRMSNorm(EpsOnly()).variance_epsilon == 1e-3


# --- the allowlist ------------------------------------------------------------------------------------------------

_MODULE_OF = {
    "LlamaRMSNorm": "llama", "MistralRMSNorm": "mistral", "MixtralRMSNorm": "mixtral", "Qwen2RMSNorm": "qwen2",
    "Qwen2MoeRMSNorm": "qwen2_moe", "Qwen3RMSNorm": "qwen3", "Qwen3MoeRMSNorm": "qwen3_moe",
    "DeepseekV3RMSNorm": "deepseek_v3", "Phi3RMSNorm": "phi3", "GraniteRMSNorm": "granite",
}


def _hf_class(name: str, module: str):
    pytest.importorskip("transformers")
    try:
        mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    except ImportError:
        pytest.skip(f"transformers has no {module}")
    cls = getattr(mod, name, None)
    if cls is None:
        pytest.skip(f"transformers has no {name}")
    return cls


def _body(fn) -> str:
    return "\n".join(line.strip() for line in inspect.getsource(fn).splitlines()[1:] if line.strip())


@pytest.mark.parametrize("name", LLAMA_RMS_NORM_CLASSES)
def test_allowlisted_classes_are_the_llama_formula(name):
    assert set(LLAMA_RMS_NORM_CLASSES) == set(_MODULE_OF)
    cls, llama = _hf_class(name, _MODULE_OF[name]), _hf_class("LlamaRMSNorm", "llama")
    assert _body(cls.forward) == _body(llama.forward), f"{name}.forward is not LlamaRMSNorm's"
    assert "self.variance_epsilon = eps" in inspect.getsource(cls.__init__)
    m = cls(40, eps=1e-5).to(torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(_weight(40, torch.bfloat16, seed=13))
    x = _rows(8, 40, torch.bfloat16, seed=14)
    assert int(_ulps(InvariantRMSNorm(m)(x), m(x)).max()) <= 2


def test_install_replaces_only_allowlisted_norms():
    pytest.importorskip("transformers")
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm

    model = torch.nn.Module()
    model.block = torch.nn.Module()
    model.block.norm = LlamaRMSNorm(16)
    model.gemma = GemmaRMSNorm(16)
    model.olmo2 = Olmo2RMSNorm(16)
    model.ln = torch.nn.LayerNorm(16)
    keys = list(model.state_dict())
    weight = model.block.norm.weight
    assert install_invariant_rms_norms(model) == ["block.norm"]
    assert isinstance(model.block.norm, InvariantRMSNorm) and model.block.norm.weight is weight
    assert type(model.gemma) is GemmaRMSNorm and type(model.olmo2) is Olmo2RMSNorm
    assert list(model.state_dict()) == keys
    assert install_invariant_rms_norms(model) == []


# --- installation in from_pretrained / quantize_model --------------------------------------------------------------


def _classes(model) -> dict[str, str]:
    return {n: type(m).__name__ for n, m in model.named_modules()}


def test_from_pretrained_installs_invariant_norms():
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    path = fixture_dir("modelopt-nvfp4")
    plain = nvfp4.from_pretrained(path, batch_invariant=False)
    inv = nvfp4.from_pretrained(path, batch_invariant=True)
    norms = [n for n, c in _classes(plain).items() if c == "LlamaRMSNorm"]
    assert len(norms) == 2 * 2 + 1
    assert not any(isinstance(m, InvariantRMSNorm) for m in plain.modules())
    classes = _classes(inv)
    assert all(classes[n] == "InvariantRMSNorm" for n in norms)
    assert "LlamaRMSNorm" not in classes.values()
    assert list(inv.state_dict()) == list(plain.state_dict())
    for n in norms:
        assert torch.equal(inv.get_submodule(n).weight, plain.get_submodule(n).weight)
    params = dict(inv.named_parameters())
    assert all(params[f"{n}.weight"] is inv.get_submodule(n).weight for n in norms)
    ids = torch.tensor([[5, 17, 99, 3, 250, 11]])
    with torch.no_grad():
        a, b = inv(ids).logits, plain(ids).logits
    assert torch.isfinite(a).all() and (a.float() - b.float()).abs().max() < 0.5


def test_quantize_model_installs_invariant_norms():
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-llama-bf16", dtype=torch.bfloat16)
    keys = list(model.state_dict())
    norms = [n for n, c in _classes(model).items() if c == "LlamaRMSNorm"]
    nvfp4.quantize_model(model, batch_invariant=True)
    assert norms and all(isinstance(model.get_submodule(n), InvariantRMSNorm) for n in norms)
    assert model.nvfp4_meta["invariant_norms"] == norms
    assert [k for k in model.state_dict() if k in keys and "norm" in k] == [k for k in keys if "norm" in k]

    plain = transformers.AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-llama-bf16", dtype=torch.bfloat16)
    nvfp4.quantize_model(plain, batch_invariant=False)
    assert not any(isinstance(m, InvariantRMSNorm) for m in plain.modules())


# --- errors --------------------------------------------------------------------------------------------------------


def test_argument_errors():
    x, w = _rows(3, 16, torch.bfloat16, seed=1), _weight(16, torch.bfloat16, seed=1)
    with pytest.raises(TypeError, match=r"x must have dtype bfloat16, float16; got float32"):
        rms_norm_invariant_impl(x.float(), w.float(), EPS)
    with pytest.raises(TypeError, match=r"weight dtype float16 must equal x dtype bfloat16"):
        rms_norm_invariant_impl(x, w.half(), EPS)
    with pytest.raises(ValueError, match=r"weight must have shape \(16,\), got \(15,\)"):
        rms_norm_invariant_impl(x, w[:15], EPS)
    with pytest.raises(ValueError, match=r"weight must be 1-D"):
        rms_norm_invariant_impl(x, w.reshape(1, 16), EPS)
    with pytest.raises(ValueError, match=r"eps must be a finite float >= 0"):
        rms_norm_invariant_impl(x, w, -1.0)
    with pytest.raises(ValueError, match=r"eps must be a finite float >= 0"):
        rms_norm_invariant_impl(x, w, float("nan"))
    with pytest.raises(ValueError, match=r"x must have at least 1 dimension"):
        rms_norm_invariant_impl(torch.tensor(1.0, dtype=torch.bfloat16), w[:1], EPS)
    big = MAX_HIDDEN + 1
    with pytest.raises(ValueError, match=rf"x.shape\[-1\] \(hidden size\) must be in \[1, {MAX_HIDDEN}\], got {big}"):
        rms_norm_invariant_impl(torch.zeros(1, big, dtype=torch.bfloat16), torch.ones(big, dtype=torch.bfloat16), EPS)

    class NoWeight(torch.nn.Module):
        variance_epsilon = 1e-6

    class MatrixWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2, 8))
            self.variance_epsilon = 1e-6

    with pytest.raises(TypeError, match=r"NoWeight has no `weight` Parameter"):
        InvariantRMSNorm(NoWeight())
    with pytest.raises(ValueError, match=r"weight must be 1-D, got shape \(2, 8\)"):
        InvariantRMSNorm(MatrixWeight())
    fp32_norm = _hf_norm(16, w).float()  # weight float32, input bfloat16 at call time
    with pytest.raises(TypeError, match=r"weight dtype float32 must equal x dtype bfloat16"):
        InvariantRMSNorm(fp32_norm)(x)


@pytest.mark.skipif(_lib.load() is None, reason="the compiled library is absent")
def test_c_abi_argument_checks():
    """The C entry's own checks (they run before any CUDA call, so no device is needed)."""
    lib = _lib.load()

    def call(dtype=0, rows=1, cols=16, stride=16, eps=1e-6, x=16, w=16, out=16):
        return lib.nvfp4_rms_norm(x, dtype, rows, cols, stride, w, eps, out, None)

    def fails(match, **kw):
        assert call(**kw) == 1
        assert match in lib.nvfp4_last_error().decode()

    fails("dtype: must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1), got 2", dtype=2)
    fails("cols: must be in [1, 65536], got 65537", cols=65537, stride=65537)
    fails("cols: must be in [1, 65536], got 0", cols=0)
    fails("x_row_stride: must be >= cols (16), got 8", stride=8)
    fails("rows: must be >= 0", rows=-1)
    fails("eps: must be finite and >= 0", eps=-1.0)
    fails("x: must not be NULL", x=None)
    fails("x: must be 2-byte aligned", x=17)
    assert call(rows=0, x=None, w=None, out=None) == 0  # no-op
    assert isinstance(ctypes.c_float(1e-6).value, float)


# --- GPU -----------------------------------------------------------------------------------------------------------

GPU_HIDDEN = HIDDEN + [2, 16, 17, 33, 255, 2049, 8192, 16384, 32768, 65536]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16).cpu()


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", GPU_HIDDEN)
def test_kernel_equals_cpu_reference_bitwise(h, dtype):
    rows = 300 if h <= 8192 else 40
    x, w = _rows(rows, h, dtype, seed=h + 1), _weight(h, dtype, seed=h)
    ref = rms_norm_reference(x, w, EPS)
    xc, wc = x.cuda(), w.cuda()
    got = rms_norm_invariant_impl(xc, wc, EPS)
    assert got.device.type == "cuda" and got.shape == x.shape
    assert torch.equal(_bits(got), _bits(ref))
    assert torch.equal(_bits(rms_norm_reference(xc, wc, EPS)), _bits(ref))  # the reference is device independent


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_special_values_bitwise(dtype):
    h = 300
    x = _rows(8, h, torch.bfloat16, seed=21).to(dtype)
    x[0, 3] = float("inf")
    x[1, 5] = float("nan")
    x[2] = 0
    x[3, 7] = -float("nan")
    x[4, 0] = -float("inf")
    w = _weight(h, dtype, seed=22)
    w[9] = float("nan")
    assert torch.equal(_bits(rms_norm_invariant_impl(x.cuda(), w.cuda(), EPS)), _bits(rms_norm_reference(x, w, EPS)))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("h", [128, 3000, 4096, 5120])
def test_kernel_rows_independent_of_batch(h):
    x, w = _rows(1000, h, torch.bfloat16, seed=31).cuda(), _weight(h, torch.bfloat16, seed=32).cuda()
    single = torch.cat([rms_norm_invariant_impl(x[i : i + 1], w, EPS) for i in range(1000)])
    for m in (1, 2, 3, 16, 17, 64, 65, 1000):
        assert torch.equal(_bits(rms_norm_invariant_impl(x[:m], w, EPS)), _bits(single[:m])), m


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("h", [7, 4096, 5120])
def test_kernel_strided_rows(h):
    wide = _rows(65, h + 24, torch.bfloat16, seed=41).cuda()
    w = _weight(h, torch.bfloat16, seed=42).cuda()
    expect = rms_norm_reference(wide[:, :h].cpu(), w.cpu(), EPS)
    for view in (wide[:, :h], wide[:, 3 : 3 + h], wide[::2, 5 : 5 + h]):
        assert view.stride(0) != h
        ref = expect if view.data_ptr() == wide.data_ptr() else rms_norm_reference(view.cpu(), w.cpu(), EPS)
        assert torch.equal(_bits(rms_norm_invariant_impl(view, w, EPS)), _bits(ref))
    three = wide[:64].reshape(4, 16, h + 24)[..., 1 : 1 + h]  # 3-D, strided
    expect3 = rms_norm_reference(three.cpu(), w.cpu(), EPS)
    assert torch.equal(_bits(rms_norm_invariant_impl(three, w, EPS)), _bits(expect3))
    assert rms_norm_invariant_impl(wide[:0, :h], w, EPS).shape == (0, h)


@pytest.mark.gpu
@requires_cuda
def test_kernel_opcheck_and_compile_equal_eager():
    h = 4096
    hf = _hf_norm(h, _weight(h, torch.bfloat16, seed=51)).cuda()
    inv = InvariantRMSNorm(hf)
    x = _rows(2 * 37, h, torch.bfloat16, seed=52).cuda().reshape(2, 37, h)
    torch.library.opcheck(rms_norm_invariant, (x, hf.weight.detach(), EPS))
    with torch.no_grad():
        eager = inv(x)
        compiled = torch.compile(inv, fullgraph=True)(x)
    assert torch.equal(_bits(compiled), _bits(eager))


@pytest.mark.gpu
@requires_cuda
def test_kernel_cuda_graph_equals_eager():
    h = 5120
    w = _weight(h, torch.bfloat16, seed=61).cuda()
    inv = InvariantRMSNorm(_hf_norm(h, w).cuda())
    static_x = _rows(17, h, torch.bfloat16, seed=62).cuda()
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            inv(static_x)  # warm-up on the side stream
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = inv(static_x)
        for seed in (63, 64):
            static_x.copy_(_rows(17, h, torch.bfloat16, seed=seed).cuda())
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(_bits(static_out), _bits(inv(static_x)))


@pytest.mark.gpu
@requires_cuda
def test_record_hf_llama_rms_norm_batch_dependence():
    """Evidence, not a requirement: does torch's eager HF LlamaRMSNorm give a row other bits at M=64 than at M=1?"""
    h = 4096
    hf = _hf_norm(h, _weight(h, torch.bfloat16, seed=71)).cuda()
    x = _rows(64, h, torch.bfloat16, seed=72).cuda()
    with torch.no_grad():
        full = hf(x)
        alone = torch.cat([hf(x[i : i + 1]) for i in range(64)])
        inv = rms_norm_invariant_impl(x, hf.weight.detach(), EPS)
    rows = int((full != alone).any(-1).sum())
    elems = int((full != alone).sum())
    print(f"\nHF LlamaRMSNorm on {torch.cuda.get_device_name()} (torch {torch.__version__}), H={h}: {rows}/64 rows, "
          f"{elems} elements differ between M=1 and M=64; max ulps vs invariant kernel {int(_ulps(full, inv).max())}")
