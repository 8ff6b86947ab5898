"""The package's PEP 517 backend: scikit-build-core, plus one rule for wheels built without the kernel library.

CMake builds the CUDA library only when it finds nvcc; without it the wheel holds Python alone. Such a wheel must not
carry the name of a full one: it is retagged py3-none-any (it runs on any platform, reference path only), while a
wheel with libnvfp4_kernels.so keeps scikit-build-core's platform tag (py3-none-linux_x86_64). The decision reads the
built wheel itself, so it follows whatever CMake decided.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from scikit_build_core.build import (  # noqa: F401  (the hooks pip calls, re-exported unchanged)
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)
from scikit_build_core.build import build_wheel as _skbuild_build_wheel

LIBRARY = "nvfp4/libnvfp4_kernels.so"
PURE_TAG = "py3-none-any"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _skbuild_build_wheel(wheel_directory, config_settings, metadata_directory)
    return retag_if_pure(Path(wheel_directory) / name).name


def retag_if_pure(wheel: Path) -> Path:
    """`wheel` itself when it holds the kernel library; else the same contents as a py3-none-any wheel (WHEEL's Tag
    and Root-Is-Purelib, RECORD's hash of WHEEL), which replaces it."""
    with zipfile.ZipFile(wheel) as zf:
        if LIBRARY in zf.namelist():
            return wheel
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    distribution, version = wheel.name.split("-")[:2]
    target = wheel.with_name(f"{distribution}-{version}-{PURE_TAG}.whl")
    dist_info = f"{distribution}-{version}.dist-info"
    wheel_meta = next(data for info, data in entries if info.filename == f"{dist_info}/WHEEL").decode()
    lines = [line for line in wheel_meta.splitlines() if line and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    wheel_meta = "\n".join(lines + ["Root-Is-Purelib: true", f"Tag: {PURE_TAG}", ""]).encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(wheel_meta).digest()).rstrip(b"=").decode()
    record_line = f"{dist_info}/WHEEL,sha256={digest},{len(wheel_meta)}"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename == f"{dist_info}/WHEEL":
                data = wheel_meta
            elif info.filename == f"{dist_info}/RECORD":
                rows = [record_line if row.startswith(f"{dist_info}/WHEEL,") else row
                        for row in data.decode().splitlines()]
                data = ("\n".join(rows) + "\n").encode()
            out.writestr(info, data)
    if target != wheel:
        wheel.unlink()
    return target
