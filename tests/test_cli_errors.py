"""The CLI on bad arguments and failing commands: argparse-style errors with exit status 2 for arguments (checked
against this machine and the model), one line with exit status 1 for a failing command, never a traceback; `check`
says when no kernel was checked and fails when asked for a GPU it cannot use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nvfp4 import cli
from conftest import fixture_dir

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _usage_error(err: str, text: str) -> None:
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert not last.startswith("usage: ") and ": error: " in last and text in last, err


@pytest.mark.parametrize("argv, text", [
    (("demo", "--prompt-len", "0"), "--prompt-len: must be >= 1, got 0"),
    (("demo", "--prompt-len", "ten"), "'ten' is not an integer"),
    (("demo", "--tokens", "-1"), "--tokens: must be >= 0, got -1"),
    (("demo", "--prompt-len", "100000", "--device", "cpu"), "exceed the model's context of 256"),
    (("demo", "--prompt-len", "250", "--tokens", "7", "--device", "cpu"), "= 257 tokens exceed the model's context"),
    (("demo", "--model", "/no/such/checkpoint", "--device", "cpu"), "--model /no/such/checkpoint: no checkpoint folder"),
    (("demo", "--device", "banana"), "--device 'banana' is not a device"),
    (("check", "--device", "meta"), "nvfp4 runs on cpu or cuda"),
])
def test_usage_errors_exit_2_in_argparse_style(capsys, argv, text):
    pytest.importorskip("transformers")
    code, _, err = _main(capsys, *argv)
    assert code == 2
    _usage_error(err, text)


def test_demo_checks_the_model_vocabulary(capsys, tmp_path):
    pytest.importorskip("transformers")
    small = tmp_path / "small"
    shutil.copytree(fixture_dir("modelopt-nvfp4"), small)
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps(dict(config, vocab_size=4)))
    code, _, err = _main(capsys, "demo", "--model", str(small), "--device", "cpu")
    assert code == 2
    _usage_error(err, "vocab_size 4 leaves no ordinary token ids")


@no_cuda
@pytest.mark.parametrize("command", ["check", "demo"])
def test_asking_for_a_gpu_that_is_not_there_fails(capsys, command):
    code, _, err = _main(capsys, command, "--device", "cuda")
    assert code == 2
    _usage_error(err, "--device cuda: no CUDA device is available on this machine")


def test_check_on_cpu_says_no_kernel_was_checked(capsys):
    code, out, _ = _main(capsys, "check", "--device", "cpu", "--quick")
    assert code == 0
    assert "No GPU kernel was checked" in out and "--device cuda" in out


def test_a_failing_command_reports_one_line_and_exit_1(capsys, tmp_path):
    pytest.importorskip("transformers")
    bad = tmp_path / "bad"
    shutil.copytree(fixture_dir("modelopt-nvfp4"), bad)
    q = json.loads((bad / "hf_quant_config.json").read_text())
    q["quantization"]["quant_algo"] = "FP8"
    (bad / "hf_quant_config.json").write_text(json.dumps(q))
    code, _, err = _main(capsys, "demo", "--model", str(bad), "--device", "cpu", "--quick", "--tokens", "1")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("python -m nvfp4 demo: error: UnsupportedCheckpointError:") and "FP8" in lines[0]


def test_demo_without_transformers_names_the_extra(capsys, monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    code, _, err = _main(capsys, "demo", "--device", "cpu")
    assert code == 1 and "pip install 'nvfp4[hf]'" in err and "Traceback" not in err


def test_info_says_whether_the_kernel_library_is_there(monkeypatch):
    from nvfp4 import _lib

    monkeypatch.setattr(_lib, "library_path", lambda: None)
    assert cli.build_description().startswith("pure Python: no kernel library (built without nvcc)")


def test_usage_error_from_a_real_process():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "nvfp4", "demo", "--prompt-len", "0"], capture_output=True, text=True,
                       timeout=120, env=env, cwd="/")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("python -m nvfp4 demo: error: argument --prompt-len: must be >= 1, "
                                                 "got 0")
