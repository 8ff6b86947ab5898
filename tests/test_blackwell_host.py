"""Blackwell (SM100 sm_100a, SM120 sm_120a) NVFP4 GEMMs: everything provable without the hardware.

* The configuration table, read through the C ABI: invariant mode is keyed by (arch, N, K) alone (M never changes it).
* CUTLASS's own host-side checks for every compiled configuration on representative shapes: can_implement (which
  also compares the SFA/SFB layouts we pass with Sm1xxBlockScaledConfig::tile_atom_to_shape_SFA/SFB) and
  get_workspace_size, with hw_info.sm_count set explicitly (no CUDA call is made), and the scale offsets the kernel
  reads against the 128x4 formula the Python swizzle implements.
* The cubins hold the block-scaled MMAs (SASS UTCOMMA ... 4X on sm_100a, OMMA.SF ... E2M1.E2M1.UE4M3.4X on sm_120a) in
  every GEMM kernel.
* No SM100/SM120 code path is reachable on another architecture (Python dispatch and the C ABI's device check).
Nothing here runs on Blackwell; numerics on real Blackwell are unverified (docs/blackwell.md).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import skip_or_fail
from nvfp4 import _lib
from nvfp4 import format as fmt
from nvfp4 import backends
from nvfp4.backends.blackwell import TILE_K, aligned_operand
from tools import cuobjdump

EXPECTED_ARCHS = [a for a in os.environ.get("NVFP4_CUDA_ARCHS", "90a;100a;120a").replace(",", ";").split(";") if a]
FAMILIES = [f for f in ("sm100", "sm120") if f"{f[2:]}a" in EXPECTED_ARCHS]

# The expected tables (cpp/kernels/sm100/config.h, cpp/kernels/sm120/config.h): name -> selection rule.
EXPECTED_CONFIGS = {
    "sm100": [
        "sm100_1sm_128x128x256_c1x1x1_persistent",
        "sm100_2sm_256x128x256_c2x1x1_persistent",
        "sm100_2sm_256x256x256_c2x1x1_persistent",
    ],
    "sm120": [
        "sm120_coop_128x128x128_c1x1x1_persistent",
        "sm120_coop_256x128x128_c1x1x1_persistent",
    ],
}


def expected_invariant(family: str, n: int, k: int) -> str:
    if family == "sm100":
        return EXPECTED_CONFIGS[family][1] if n <= 2048 else EXPECTED_CONFIGS[family][2]
    return EXPECTED_CONFIGS[family][0] if n <= 4096 else EXPECTED_CONFIGS[family][1]


def expected_fast(family: str, m: int, n: int, k: int) -> str:
    if family == "sm100":
        return EXPECTED_CONFIGS[family][0] if m <= 128 else expected_invariant(family, n, k)
    return EXPECTED_CONFIGS[family][0] if m <= 128 else EXPECTED_CONFIGS[family][1]


# M on both sides of every threshold, decode to prefill.
M_VALUES = [1, 2, 7, 8, 16, 17, 31, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4096, 8191, 65536]
# (N, K): square and rectangular LLM projections, narrow/wide on both sides of the N thresholds, K not a multiple
# of the tile K (K % 256 != 0, K % 128 != 0).
NK_VALUES = [(32, 64), (2048, 2048), (2056, 2048), (4096, 4096), (4104, 4096), (8192, 8192), (14336, 4096),
             (4096, 14336), (1024, 96), (512, 1056), (160, 2016), (28672, 8192)]


@pytest.fixture(scope="module")
def lib():
    if _lib.library_path() is None:
        skip_or_fail("nvfp4 was installed without its compiled library")
    return _lib.require()


def require_family(lib, family: str):
    if not hasattr(lib, f"nvfp4_{family}_gemm"):
        pytest.fail(f"the library was built for sm_{family[2:]}a but has no nvfp4_{family}_gemm entry point")


def config_table(lib, family: str) -> list[str]:
    count = getattr(lib, f"nvfp4_{family}_num_configs")()
    names = []
    for i in range(count):
        buf = ctypes.create_string_buffer(128)
        length = getattr(lib, f"nvfp4_{family}_config_info")(i, buf, len(buf))
        assert 0 < length < len(buf)
        names.append(buf.value.decode())
    return names


def config_name(lib, family: str, m: int, n: int, k: int, invariant: bool) -> str:
    buf = ctypes.create_string_buffer(128)
    length = getattr(lib, f"nvfp4_{family}_config_name")(m, n, k, int(invariant), buf, len(buf))
    assert length > 0, _lib.require().nvfp4_last_error().decode()
    return buf.value.decode()


def host_check(lib, family: str, index: int, m: int, n: int, k: int, out_dtype: int = 0, sm_count: int = 148):
    can, ws, layout_ok = ctypes.c_int(-1), ctypes.c_size_t(12345), ctypes.c_int(-1)
    status = getattr(lib, f"nvfp4_{family}_host_check")(index, m, n, k, out_dtype, sm_count, ctypes.byref(can),
                                                        ctypes.byref(ws), ctypes.byref(layout_ok))
    _lib.check(status, f"nvfp4_{family}_host_check")
    return bool(can.value), ws.value, bool(layout_ok.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_table_is_the_documented_one(lib, family):
    require_family(lib, family)
    assert config_table(lib, family) == EXPECTED_CONFIGS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_invariant_config_is_keyed_by_n_k_alone(lib, family):
    """Vary M over decode..prefill sizes: the invariant configuration never changes for a given (N, K)."""
    require_family(lib, family)
    keyed: dict[tuple[int, int], str] = {}
    for n, k in NK_VALUES:
        names = {config_name(lib, family, m, n, k, True) for m in M_VALUES}
        assert len(names) == 1, f"{family} invariant config for N={n} K={k} changes with M: {names}"
        keyed[(n, k)] = names.pop()
        assert keyed[(n, k)] == expected_invariant(family, n, k)
    # and the index query agrees with the name query
    index = ctypes.c_int(-1)
    for (n, k), name in keyed.items():
        assert getattr(lib, f"nvfp4_{family}_select_config")(7, n, k, 1, ctypes.byref(index)) == 0
        assert config_table(lib, family)[index.value] == name


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_config_follows_m(lib, family):
    """Negative control: fast mode does switch configurations with M (so the invariance test above can fail)."""
    require_family(lib, family)
    for n, k in NK_VALUES:
        names = {config_name(lib, family, m, n, k, False) for m in M_VALUES}
        assert len(names) >= 2, f"{family} fast mode for N={n} K={k} never changes with M"
        for m in M_VALUES:
            assert config_name(lib, family, m, n, k, False) == expected_fast(family, m, n, k)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_queries_reject_unaligned_shapes(lib, family):
    """The ABI states the layer's padding contract: K % 32 == 0 and N % 8 == 0 (the layer pads)."""
    require_family(lib, family)
    index = ctypes.c_int(-1)
    select = getattr(lib, f"nvfp4_{family}_select_config")
    assert select(1, 4096, 48, 1, ctypes.byref(index)) == 1
    assert "multiple of 32" in lib.nvfp4_last_error().decode()
    assert select(1, 4100, 4096, 1, ctypes.byref(index)) == 1
    assert "multiple of 8" in lib.nvfp4_last_error().decode()


@pytest.mark.parametrize("family", FAMILIES)
def test_launches_take_whole_k_tiles_only(lib, family):
    """A K residue of the tile K would make the last k-tile read scale and data bytes past the operands (TMA fill);
    the entry points that launch refuse it, before any device call, with the tile K the Python side pads to."""
    require_family(lib, family)
    tile = TILE_K[family]
    size = ctypes.c_size_t(0)
    workspace_size = getattr(lib, f"nvfp4_{family}_gemm_workspace_size")
    gemm = getattr(lib, f"nvfp4_{family}_gemm")
    for k in (tile + 32, tile + 96, 1056):
        assert workspace_size(16, 4096, k, 1, ctypes.byref(size)) == 1
        assert f"multiple of the tile K {tile}" in lib.nvfp4_last_error().decode()
        status = gemm(None, None, 16, 4096, k, None, None, None, 0, None, None, 0, 4096, 1, None, 0, None)
        assert status == 1 and f"multiple of the tile K {tile}" in lib.nvfp4_last_error().decode()
    # whole k-tiles pass the shape checks: the next check decides (the device: OK on the target, UNSUPPORTED on
    # another GPU, a CUDA error without one; for the launch, the NULL pointers)
    assert workspace_size(16, 4096, 2 * tile, 1, ctypes.byref(size)) in (0, 2, 3)
    assert gemm(None, None, 16, 4096, 2 * tile, None, None, None, 0, None, None, 0, 4096, 1, None, 0, None) == 1
    assert "must not be NULL" in lib.nvfp4_last_error().decode()


def test_unaligned_operands_are_copied_to_aligned_buffers():
    """User views (an odd offset, a stride) reach the kernels as aligned contiguous copies, never as raw pointers."""
    base = torch.arange(64, dtype=torch.bfloat16)
    for view in (base[1:33], base[::2]):
        out = aligned_operand(view)
        assert out.is_contiguous() and out.data_ptr() % 16 == 0 and torch.equal(out, view)
    aligned = torch.zeros(32, dtype=torch.bfloat16)
    assert aligned_operand(aligned) is aligned and aligned_operand(None) is None


# Representative shapes for the CUTLASS host checks: decode and prefill M (incl. ragged), LLM N/K, K residues of the
# tile K, N not a multiple of the tile N.
CHECK_SHAPES = [(1, 4096, 4096), (7, 6144, 4096), (128, 4096, 14336), (300, 14336, 4096), (4096, 8192, 8192),
                (33, 2056, 96), (257, 136, 1056), (1, 32, 32)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("out_dtype", [0, 1], ids=["bf16", "fp16"])
def test_cutlass_host_checks_every_config(lib, family, out_dtype):
    """CUTLASS can_implement (incl. its own SFA/SFB == tile_atom_to_shape_SFA/SFB comparison) and workspace size for
    every compiled configuration, with hw_info.sm_count given (148 = B200, 188 = RTX PRO 6000, 70 = RTX 5090)."""
    require_family(lib, family)
    for index, name in enumerate(config_table(lib, family)):
        for m, n, k in CHECK_SHAPES:
            for sms in (148, 188, 70):
                can, ws, layout_ok = host_check(lib, family, index, m, n, k, out_dtype, sms)
                assert can, f"{name}: CUTLASS can_implement failed for M={m} N={n} K={k} sm_count={sms}"
                assert layout_ok, f"{name}: scale layout differs from the 128x4 formula for M={m} N={n} K={k}"
                # The persistent data-parallel scheduler needs no reduction workspace; anything it does need is
                # small and must not grow with M (no M-dependent split/stream-K buffers).
                ws_big_m = host_check(lib, family, index, 65536, n, k, out_dtype, sms)[1]
                assert ws == ws_big_m, f"{name}: workspace depends on M ({ws} vs {ws_big_m})"
                assert ws < (1 << 20)


@pytest.mark.parametrize("family", FAMILIES)
def test_cutlass_rejects_what_the_layer_pads(lib, family):
    """The padding rules of NvFp4Linear come from CUTLASS: can_implement fails for K % 32 != 0 (16-byte TMA rows of
    packed e2m1) and for N % 8 != 0 (16-byte rows of the bf16/fp16 TMA store)."""
    require_family(lib, family)
    for index, name in enumerate(config_table(lib, family)):
        assert not host_check(lib, family, index, 64, 4096, 4096 + 16)[0], f"{name} accepted K % 32 != 0"
        assert not host_check(lib, family, index, 64, 4096 + 4, 4096)[0], f"{name} accepted N % 8 != 0"
        assert host_check(lib, family, index, 64, 4096 + 8, 4096 + 32)[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rows,k", [(1, 32), (130, 96), (255, 1056), (513, 2048)])
def test_kernel_scale_layout_matches_python_swizzle(lib, family, rows, k):
    """The layouts handed to CUTLASS give, for every (row, group), the offset of nvfp4.format.swizzled_scale_offset
    (the host check compares them with the formula in C++; here the formula is tied to the Python swizzle)."""
    require_family(lib, family)
    _, _, layout_ok = host_check(lib, family, 0, rows, rows if rows % 8 == 0 else 8 * ((rows + 7) // 8), k)
    assert layout_ok
    groups = k // 16
    scales = torch.randint(0, 256, (rows, groups), dtype=torch.uint8)
    swz = fmt.swizzle_scales(scales)
    offsets = torch.tensor([[fmt.swizzled_scale_offset(r, g, groups) for g in range(groups)] for r in range(rows)])
    assert swz.numel() == fmt.swizzled_scale_bytes(rows, groups)
    assert torch.equal(swz[offsets.reshape(-1)].reshape(rows, groups), scales)


# --- SASS evidence ---------------------------------------------------------------------------------------------

SASS_MMA = {
    # tcgen05.mma block-scaled (kind::mxf4nvf4, scale vector 16 -> "4X"), 1-CTA and 2-CTA forms, + UTCCP scale copies
    "sm100": (re.compile(r"\bUTCOMMA(\.2CTA)?\.4X\b"), re.compile(r"\bUTCCP\b")),
    # warp-level mma.sync kind::mxf4nvf4.block_scale: OMMA.SF m16n8k64, e2m1 x e2m1, ue4m3 scales, 4X
    "sm120": (re.compile(r"\bOMMA\.SF\.16864\.F32\.E2M1\.E2M1\.UE4M3\.4X\b"), None),
}


@pytest.fixture(scope="module")
def sass_by_arch(lib):
    tool = cuobjdump()
    if tool is None:
        skip_or_fail("needs cuobjdump (pip install nvidia-cuda-cuobjdump)")
    env = dict(os.environ)
    env["PATH"] = f"{Path(tool).parent}{os.pathsep}{env.get('PATH', '')}"  # nvidia-cuda-nvdisasm lands next to it
    out = {}
    for family in FAMILIES:
        proc = subprocess.run([tool, "-sass", "-arch", f"sm_{family[2:]}a", str(_lib.library_path())],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 and "nvdisasm" in proc.stderr:
            skip_or_fail(f"cuobjdump -sass needs nvdisasm (pip install nvidia-cuda-nvdisasm): {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr
        out[family] = proc.stdout
    return out


def gemm_functions(sass: str) -> dict[str, str]:
    """Function name -> SASS body, for the CUTLASS GEMM kernels only."""
    parts = re.split(r"\n\s*Function : (\S+)", sass)
    funcs = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    return {name: body for name, body in funcs.items() if "GemmUniversal" in name}


@pytest.mark.parametrize("family", FAMILIES)
def test_cubin_gemm_kernels_use_block_scaled_mma(lib, sass_by_arch, family):
    require_family(lib, family)
    funcs = gemm_functions(sass_by_arch[family])
    n_configs = len(EXPECTED_CONFIGS[family])
    assert len(funcs) == 2 * n_configs, f"expected {2 * n_configs} GEMM kernels (bf16 + fp16 per config), got {len(funcs)}"
    mma, scale_copy = SASS_MMA[family]
    for name, body in funcs.items():
        assert mma.search(body), f"{family} kernel {name[:120]}... has no block-scaled NVFP4 MMA"
        if scale_copy is not None:
            assert scale_copy.search(body), f"{family} kernel {name[:120]}... has no UTCCP scale-factor copy"
    if family == "sm100":  # both the 1-CTA and the 2-CTA MMA forms are present (1SM and 2SM configurations)
        assert re.search(r"\bUTCOMMA\.4X\b", sass_by_arch[family]) and re.search(r"\bUTCOMMA\.2CTA\.4X\b", sass_by_arch[family])


# --- never reached on another architecture ---------------------------------------------------------------------

ALL_FAMILIES = frozenset({"sm90", "sm100", "sm120"})


@pytest.mark.parametrize("major", range(7, 13))
@pytest.mark.parametrize("minor", [0, 1, 3, 9])
@pytest.mark.parametrize("invariant", [True, False])
def test_blackwell_families_only_for_blackwell_capabilities(major, minor, invariant):
    """sm_100a / sm_120a SASS runs on 10.0 / 12.0 alone: every other capability gets no Blackwell backend."""
    try:
        family = backends.select("cuda", (major, minor), batch_invariant=invariant, compiled=ALL_FAMILIES).name
    except backends.NoKernelError:
        family = None
    assert family == {(9, 0): "sm90", (10, 0): "sm100", (12, 0): "sm120"}.get((major, minor))


@pytest.mark.parametrize("family", FAMILIES)
def test_c_abi_refuses_other_devices(lib, family):
    """The entry points check the current device before anything else reaches CUTLASS: on this machine (no GPU, or
    a Hopper GPU) they return an error and never launch."""
    require_family(lib, family)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (int(family[2:]) // 10, 0):
        pytest.skip("running on the target architecture")
    size = ctypes.c_size_t(0)
    status = getattr(lib, f"nvfp4_{family}_gemm_workspace_size")(16, 4096, 4096, 1, ctypes.byref(size))
    assert status in (2, 3)  # UNSUPPORTED (other GPU) or CUDA error (no GPU)
    message = lib.nvfp4_last_error().decode()
    if torch.cuda.is_available():
        assert status == 2 and f"sm_{family[2:]}a" in message, message


# --- NvFp4Linear's sm100/sm120 plumbing on CPU, with the GEMM emulated ------------------------------------------

def _emulated_blackwell_mm(family, k_real, act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias,
                           out_dtype, invariant):
    """What the Blackwell kernels compute, from exactly the operands the layer hands them (padded shapes, swizzled
    scales), via the reference GEMM. Checks the operand contract on the way: whole k-tiles, and a K tail (past the
    layer's in_features) of zero data with finite scales, so that no tail product can be NaN."""
    from nvfp4.reference import gemm_reference
    m, k = act_packed.shape[0], act_packed.shape[1] * 2
    n = w_packed.shape[0]
    assert k % TILE_K[family] == 0 and n % 8 == 0 and w_packed.shape == (n, k // 2)
    g = k_real // 16
    for packed, swizzled, rows in ((act_packed, act_scales, m), (w_packed, w_scales_swizzled, n)):
        assert not packed[:, k_real // 2:].any()
        tail = fmt.unswizzle_scales(swizzled, rows, k // 16)[:, g:].view(torch.float8_e4m3fn).float()
        assert torch.isfinite(tail).all()
    assert not fmt.unswizzle_scales(w_scales_swizzled, n, k // 16)[:, g:].any()  # weights: zero scales
    assert alpha.shape == (m,) and alpha.dtype == torch.float32
    a_scales = fmt.unswizzle_scales(act_scales, m, k // 16).view(torch.float8_e4m3fn).float()
    act = fmt.e2m1_values(fmt.unpack_e2m1(act_packed)).float().reshape(m, k // 16, 16) * a_scales.unsqueeze(-1)
    w_scales = fmt.unswizzle_scales(w_scales_swizzled, n, k // 16)
    return gemm_reference(act.reshape(m, k).to(torch.bfloat16), w_packed, w_scales, alpha, bias, out_dtype)


@pytest.mark.parametrize("family", ["sm100", "sm120"])
@pytest.mark.parametrize("n,k", [(64, 128), (12, 48), (20, 1008)])
@pytest.mark.parametrize("activation", ["per-token", "static"])
def test_linear_blackwell_branch_plumbing(monkeypatch, family, n, k, activation):
    from nvfp4.linear import NvFp4Linear
    from conftest import wide_spread

    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=True)
    lin.weight.data = wide_spread(n, k, seed=1, dtype=torch.float32)
    amax = 100.0 if activation == "static" else None
    ref_layer = NvFp4Linear.from_linear(lin, input_amax=amax, backend="reference")
    layer = NvFp4Linear.from_linear(lin, input_amax=amax, backend="reference")
    backend = backends.get(family)
    layer._to_layout(backend)  # what loading onto a CC 10.0 / 12.0 device does
    w = layer.weight
    n_pad, k_pad = -(-n // 8) * 8, -(-k // TILE_K[family]) * TILE_K[family]
    assert w.shape == (n_pad, k_pad // 2)  # padded when prepared, with zeros, to whole rows and k-tiles
    assert torch.equal(w[:n, : k // 2], ref_layer.weight) and not w[n:].any() and not w[:, k // 2:].any()
    zero_groups = torch.nn.functional.pad(ref_layer.weight_scale.view(torch.uint8), (0, k_pad // 16 - k // 16))
    assert torch.equal(layer.weight_scale, fmt.swizzle_scales(zero_groups))
    for key, value in ref_layer.state_dict().items():  # the runtime layout is undone exactly
        assert torch.equal(layer.state_dict()[key].reshape(-1).view(torch.uint8), value.reshape(-1).view(torch.uint8)), key
    x = wide_spread(9, k, seed=2)
    want = ref_layer(x)
    calls = []

    def fake(*args):
        calls.append(args)
        return _emulated_blackwell_mm(family, k, *args)

    monkeypatch.setattr(backend, "_impl", fake)
    monkeypatch.setattr(NvFp4Linear, "resolved_backend", lambda self, device=None: family)
    got = layer(x)
    assert len(calls) == 1 and got.shape == (9, n)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
