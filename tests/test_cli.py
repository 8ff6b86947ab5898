"""python -m nvfp4 {info,check,demo} on this machine (CPU: the reference path, and they say so)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


def _run(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "nvfp4", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def test_info():
    r = _run("info")
    assert "Traceback" not in r.stderr, r.stderr
    assert "nvfp4" in r.stdout and "torch" in r.stdout
    if "kernel_info_error" in r.stdout:  # the compiled library failed to load: reported, with exit status 1
        assert r.returncode == 1
    else:
        assert r.returncode == 0, r.stderr
        assert "compiled_archs" in r.stdout and "gemm_batch_invariant" in r.stdout


def test_check_quick():
    r = _run("check", "--quick")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed" in r.stdout and "FAIL" not in r.stdout
    if not torch.cuda.is_available():
        assert "reference path" in r.stdout


def test_check_reports_failure(monkeypatch, capsys):
    from nvfp4 import cli

    monkeypatch.setattr(cli, "check_invariance", lambda *a, **k: [{"M": 1, "N": 1, "K": 16, "activation": "static", "backend": "x", "status": "FAIL", "note": "1 rows differ", "seconds": 0.0}])
    assert cli.main(["check", "--device", "cpu"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_demo_quick():
    pytest.importorskip("transformers")
    r = _run("demo", "--quick", "--tokens", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical logits and tokens" in r.stdout
    if not torch.cuda.is_available():
        assert "reference path" in r.stdout
