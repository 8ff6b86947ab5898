"""What the installed library holds: device code for every arch in the build, and its C ABI."""

import os
import re
import subprocess

import pytest

import nvfp4
from nvfp4 import _lib
from conftest import skip_or_fail
from tools import cuobjdump

EXPECTED_ARCHS = [a for a in os.environ.get("NVFP4_CUDA_ARCHS", "90a;100a;120a").replace(",", ";").split(";") if a]


@pytest.fixture(scope="module")
def library_path():
    path = _lib.library_path()
    if path is None:
        skip_or_fail("nvfp4 was installed without its compiled library")
    return path


def test_library_reports_its_archs(library_path):
    assert _lib.compiled_archs() == tuple(int(a.rstrip("a")) for a in EXPECTED_ARCHS)
    info = nvfp4.kernel_info()
    assert info["library_loaded"] and info["compiled_archs"] == [f"sm_{a}" for a in EXPECTED_ARCHS]


def test_cubins_for_every_arch(library_path):
    tool = cuobjdump()
    if tool is None:
        skip_or_fail("needs cuobjdump (pip install nvidia-cuda-cuobjdump)")
    listing = subprocess.run([tool, "--list-elf", str(library_path)], check=True, capture_output=True, text=True).stdout
    found = set(re.findall(r"sm_(\d+a?)", listing))
    for arch in EXPECTED_ARCHS:
        assert arch in found, f"no sm_{arch} cubin in {library_path}:\n{listing}"
    ptx = subprocess.run([tool, "--list-ptx", str(library_path)], capture_output=True, text=True).stdout
    assert "ptx" not in ptx.lower().replace("--list-ptx", ""), f"the library must ship SASS only, found PTX:\n{ptx}"


def test_library_has_no_cudart_shared_dependency(library_path):
    deps = subprocess.run(["ldd", str(library_path)], capture_output=True, text=True).stdout
    assert "libcudart" not in deps, f"cudart must be linked statically:\n{deps}"
    assert "libtorch" not in deps and "libc10" not in deps


def test_hopper_gemm_main_loops_use_hgmma(library_path):
    """The sm_90a GEMM kernels must run on wgmma (HGMMA), not HMMA/FFMA main loops."""
    if "90a" not in EXPECTED_ARCHS:
        pytest.skip("sm_90a not in this build")
    tool = cuobjdump()
    if tool is None:
        skip_or_fail("needs cuobjdump (pip install nvidia-cuda-cuobjdump)")
    env = dict(os.environ, PATH=f"{os.path.dirname(tool)}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([tool, "-sass", "-arch", "sm_90a", str(library_path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0 and "nvdisasm" in proc.stderr:
        skip_or_fail("cuobjdump -sass needs nvdisasm (pip install nvidia-cuda-nvdisasm)")
    assert proc.returncode == 0, proc.stderr
    functions = dict(zip(*[iter(re.split(r"\n\s*Function : (\S+)", proc.stdout)[1:])] * 2))
    gemms = {name: body for name, body in functions.items() if "4sm90" in name
             and "reduce" not in name.lower()}
    assert gemms, f"no sm90 GEMM kernels found among {list(functions)[:10]}"
    for name, body in gemms.items():
        assert re.search(r"\bHGMMA\.", body), f"{name} has no HGMMA"
        assert not re.search(r"\bHMMA\.", body), f"{name} uses HMMA"
