"""Backend selection per compute capability (capability injected: no GPU needed), and each backend's runtime layout."""

import pytest
import torch

from nvfp4 import backends
from nvfp4.backends import NoKernelError

ALL = frozenset({"sm90", "sm100", "sm120"})
# Arch-specific SASS (sm_90a, sm_100a, sm_120a) runs on exactly one compute capability.
SERVED = {(9, 0): "sm90", (10, 0): "sm100", (12, 0): "sm120"}
EVERY_CAPABILITY = [(major, minor) for major in range(7, 13) for minor in range(0, 10)
                    if (major, minor) <= (12, 1)]


@pytest.mark.parametrize("cap", EVERY_CAPABILITY, ids=lambda c: f"{c[0]}.{c[1]}")
@pytest.mark.parametrize("invariant", [True, False])
def test_every_capability_maps_to_its_kernels_or_no_kernel_error(cap, invariant):
    expected = SERVED.get(cap)
    found = backends.for_capability(cap)
    assert (found.name if found else None) == expected
    if expected is None:
        with pytest.raises(NoKernelError, match=rf"compute capability {cap[0]}\.{cap[1]}.*backend='reference'"):
            backends.select("cuda", cap, batch_invariant=invariant, compiled=ALL)
    else:
        assert backends.select("cuda", cap, batch_invariant=invariant, compiled=ALL).name == expected
    assert backends.select("cuda", cap, batch_invariant=invariant, backend="reference", compiled=ALL).name == "reference"


def test_blackwell_ultra_and_spark_get_no_kernel_error_not_a_library_error():
    # sm_100a SASS does not run on 10.3 (B300) and sm_120a not on 12.1 (GB10): the library would fail inside C.
    for cap in ((10, 3), (12, 1), (10, 1), (11, 0)):
        with pytest.raises(NoKernelError, match="sm100: 10.0; sm120: 12.0"):
            backends.select("cuda", cap, batch_invariant=True, compiled=ALL)
        with pytest.raises(ValueError, match=rf"cannot run on a device of compute capability {cap[0]}\.{cap[1]}"):
            backends.select("cuda", cap, batch_invariant=True, backend="sm100", compiled=ALL)


@pytest.mark.parametrize("invariant", [True, False])
def test_hopper_never_gets_blackwell_code(invariant):
    assert backends.select("cuda", (9, 0), batch_invariant=invariant, compiled=ALL).name == "sm90"
    with pytest.raises(NoKernelError, match="no .* NVFP4 GEMM kernel for compute capability 9.0"):
        backends.select("cuda", (9, 0), batch_invariant=invariant, compiled=frozenset({"sm100", "sm120"}))
    with pytest.raises(ValueError, match="cannot run on a device of compute capability 9.0"):
        backends.select("cuda", (9, 0), batch_invariant=invariant, backend="sm100", compiled=ALL)


def test_no_silent_fallback_and_reference_opt_in():
    with pytest.raises(NoKernelError, match="fast"):
        backends.select("cuda", (9, 0), batch_invariant=False, compiled=frozenset())
    assert backends.select("cpu", None, batch_invariant=True).name == "reference"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        backends.select("cpu", None, batch_invariant=True, backend="sm90")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.select("cpu", None, batch_invariant=True, backend="cublas")
    with pytest.raises(NoKernelError, match="device type 'mps'"):
        backends.select("mps", None, batch_invariant=True)


def test_registry_names_are_the_layer_backend_choices():
    from nvfp4.linear import NvFp4Linear

    assert backends.BACKEND_NAMES == ("auto", "reference", "sm90", "sm100", "sm120")
    with pytest.raises(ValueError, match="backend must be one of"):
        NvFp4Linear(32, 8, backend="sm80")


@pytest.mark.parametrize("backend", [b.name for b in backends.REGISTRY])
@pytest.mark.parametrize("n,k", [(1, 16), (7, 48), (24, 64), (130, 256), (200, 1008)])
def test_runtime_layout_round_trips_exactly(backend, n, k):
    g = torch.Generator().manual_seed(n * 1000 + k)
    w = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
    s = torch.randint(0, 256, (n, k // 16), generator=g, dtype=torch.uint8).view(torch.float8_e4m3fn)
    b = backends.get(backend)
    w_rt, s_rt = b.prepare(w, s)
    w2, s2 = b.unprepare(w_rt, s_rt, n, k)
    assert w2.dtype == torch.uint8 and s2.dtype == torch.float8_e4m3fn
    assert torch.equal(w2, w) and torch.equal(s2.view(torch.uint8), s.view(torch.uint8))
