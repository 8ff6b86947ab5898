"""Backend selection per compute capability (capability injected: no GPU needed)."""

import pytest

from nvfp4.dispatch import NoKernelError, arch_family, select_backend

ALL = frozenset({"sm90", "sm100", "sm120"})


@pytest.mark.parametrize("cap,family", [((9, 0), "sm90"), ((10, 0), "sm100"), ((10, 3), "sm100"), ((12, 0), "sm120"),
                                        ((12, 1), "sm120"), ((8, 9), None), ((8, 0), None), ((11, 0), None)])
def test_arch_family(cap, family):
    assert arch_family(cap) == family


@pytest.mark.parametrize("invariant", [True, False])
def test_hopper_never_gets_blackwell_code(invariant):
    assert select_backend("cuda", (9, 0), batch_invariant=invariant, gemm_families=ALL) == "sm90"
    with pytest.raises(NoKernelError, match="no .* NVFP4 GEMM kernel for compute capability 9.0"):
        select_backend("cuda", (9, 0), batch_invariant=invariant, gemm_families=frozenset({"sm100", "sm120"}))
    with pytest.raises(ValueError, match="cannot run on a device of compute capability 9.0"):
        select_backend("cuda", (9, 0), batch_invariant=invariant, backend="sm100", gemm_families=ALL)


def test_blackwell_families():
    assert select_backend("cuda", (10, 0), batch_invariant=True, gemm_families=ALL) == "sm100"
    assert select_backend("cuda", (12, 0), batch_invariant=True, gemm_families=ALL) == "sm120"


def test_no_silent_fallback_and_reference_opt_in():
    with pytest.raises(NoKernelError, match="batch-invariant.*backend='reference'"):
        select_backend("cuda", (8, 0), batch_invariant=True, gemm_families=ALL)
    with pytest.raises(NoKernelError, match="fast"):
        select_backend("cuda", (9, 0), batch_invariant=False, gemm_families=frozenset())
    assert select_backend("cuda", (8, 0), batch_invariant=True, backend="reference", gemm_families=ALL) == "reference"
    assert select_backend("cpu", None, batch_invariant=True) == "reference"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        select_backend("cpu", None, batch_invariant=True, backend="sm90")
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend("cpu", None, batch_invariant=True, backend="cublas")
