"""The build backend's rule for wheels: one without the kernel library is retagged py3-none-any (never the name of a
full wheel), with a consistent WHEEL and RECORD; one with the library keeps its platform tag. .ci/run builds both
kinds for real; this checks the rewrite itself."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("scikit_build_core")

BACKEND = Path(__file__).resolve().parents[1] / "build_backend" / "nvfp4_build.py"


def _backend():
    spec = importlib.util.spec_from_file_location("nvfp4_build", BACKEND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _fake_wheel(folder: Path, with_library: bool) -> Path:
    files = {"nvfp4/__init__.py": b"x = 1\n"}
    if with_library:
        files["nvfp4/libnvfp4_kernels.so"] = b"\x7fELF"
    files["nvfp4-0.1.0.dist-info/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: scikit-build-core\nRoot-Is-Purelib: false\n"
                                            b"Tag: py3-none-linux_x86_64\n\n")
    record = [f"{name},{_hash(data)},{len(data)}" for name, data in files.items()] + ["nvfp4-0.1.0.dist-info/RECORD,,"]
    files["nvfp4-0.1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "nvfp4-0.1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_wheel_without_the_library_becomes_py3_none_any(tmp_path):
    out = _backend().retag_if_pure(_fake_wheel(tmp_path, with_library=False))
    assert out.name == "nvfp4-0.1.0-py3-none-any.whl"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # the platform-tagged file is gone
    with zipfile.ZipFile(out) as zf:
        wheel = zf.read("nvfp4-0.1.0.dist-info/WHEEL").decode()
        assert wheel.splitlines() == ["Wheel-Version: 1.0", "Generator: scikit-build-core", "Root-Is-Purelib: true",
                                      "Tag: py3-none-any"]
        for row in zf.read("nvfp4-0.1.0.dist-info/RECORD").decode().splitlines():
            name, digest, size = row.split(",")
            if digest:  # every hash in RECORD matches the file it names, WHEEL included
                data = zf.read(name)
                assert digest == _hash(data) and int(size) == len(data), name
        assert zf.read("nvfp4/__init__.py") == b"x = 1\n"


def test_wheel_with_the_library_keeps_its_platform_tag(tmp_path):
    wheel = _fake_wheel(tmp_path, with_library=True)
    before = wheel.read_bytes()
    assert _backend().retag_if_pure(wheel) == wheel and wheel.read_bytes() == before
