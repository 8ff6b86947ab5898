"""from_pretrained on bad checkpoints and arguments: paths, JSON, config types, conflicting configs, shards outside the
folder, tensors of the other format, bad scale values on disk; and one way of building the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import nvfp4  # noqa: E402
from nvfp4 import UnsupportedCheckpointError  # noqa: E402
from nvfp4.loading import read_tensors  # noqa: E402
from conftest import fixture_dir  # noqa: E402

LAYER = "model.layers.0.self_attn.o_proj"


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(fixture_dir(name), dst)
    return dst


def _edit_json(file: Path, fn) -> None:
    data = json.loads(file.read_text())
    fn(data)
    file.write_text(json.dumps(data))


def _rewrite_tensors(path: Path, fn) -> None:
    from safetensors.torch import save_file

    t = read_tensors(path)
    fn(t)
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})


# --- paths --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["abs", "relative", "pathlib"])
def test_missing_local_folder_is_file_not_found_naming_it(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    missing = {"abs": str(tmp_path / "no-such-model"), "relative": "./no-such-model",
               "pathlib": Path("no-such-model")}[given]
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder: .*no-such-model"):
        nvfp4.from_pretrained(missing)


def test_a_file_instead_of_the_folder_is_refused(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    with pytest.raises(NotADirectoryError, match="model.safetensors is a file; pass the checkpoint folder"):
        nvfp4.from_pretrained(p / "model.safetensors")


def test_hub_id_that_cannot_be_fetched_is_file_not_found(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-nvfp4-model' is not a local folder, and fetching it"):
        nvfp4.from_pretrained("nobody/no-such-nvfp4-model")


def test_missing_config_json_is_named(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    (p / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        nvfp4.from_pretrained(p)


# --- JSON and config types ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("file", ["config.json", "hf_quant_config.json"])
def test_json_errors_name_the_file(tmp_path, file):
    p = _copy(tmp_path, "modelopt-nvfp4")
    (p / file).write_text("{ not json")
    with pytest.raises(ValueError, match=rf"{file} is not valid JSON"):
        nvfp4.from_pretrained(p)
    (p / file).write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{file} must hold a JSON object, got list"):
        nvfp4.from_pretrained(p)


@pytest.mark.parametrize("value", ["nvfp4", 3, ["modelopt"]])
def test_quantization_config_of_the_wrong_type(tmp_path, value):
    p = _copy(tmp_path, "ct-nvfp4")
    _edit_json(p / "config.json", lambda c: c.update(quantization_config=value))
    with pytest.raises(ValueError, match=r"config\.json: quantization_config must be a JSON object"):
        nvfp4.from_pretrained(p)


def test_compressed_tensors_config_entries_of_the_wrong_type(tmp_path):
    p = _copy(tmp_path, "ct-nvfp4")
    _edit_json(p / "config.json", lambda c: c["quantization_config"].update(config_groups={"group_0": "nvfp4"}))
    with pytest.raises(ValueError, match=r"quantization_config\.config_groups\.group_0 must be a JSON object"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "b", "ct-nvfp4")
    _edit_json(p / "config.json", lambda c: c["quantization_config"].update(ignore="lm_head"))
    with pytest.raises(ValueError, match=r"quantization_config\.ignore must be a list of module-name patterns"):
        nvfp4.from_pretrained(p)


def test_exclude_modules_given_as_a_string_is_refused_not_split(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    _edit_json(p / "hf_quant_config.json", lambda q: q["quantization"].update(exclude_modules="lm_head"))
    with pytest.raises(ValueError, match=r"hf_quant_config\.json: quantization\.exclude_modules must be a list"):
        nvfp4.from_pretrained(p)


# --- conflicting configs, tensors of the other format --------------------------------------------------------------

def test_conflicting_quantization_configs_are_refused(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    _edit_json(p / "config.json", lambda c: c["quantization_config"].update(quant_algo="W4A16_NVFP4"))
    with pytest.raises(UnsupportedCheckpointError, match="conflicting quantization configs: .*hf_quant_config.json says "
                                                         "ModelOpt NVFP4.*says ModelOpt W4A16_NVFP4"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "b", "modelopt-nvfp4")
    _edit_json(p / "config.json", lambda c: c["quantization_config"].update(ignore=["lm_head"]))
    with pytest.raises(UnsupportedCheckpointError, match="conflicting quantization configs"):
        nvfp4.from_pretrained(p)
    p = _copy(tmp_path / "c", "modelopt-nvfp4")
    ct = json.loads((fixture_dir("ct-nvfp4") / "config.json").read_text())["quantization_config"]
    _edit_json(p / "config.json", lambda c: c.update(quantization_config=ct))
    with pytest.raises(UnsupportedCheckpointError, match="conflicting quantization configs: .*quant_method "
                                                         "'compressed-tensors'"):
        nvfp4.from_pretrained(p)


def test_agreeing_configs_still_load():
    model = nvfp4.from_pretrained(fixture_dir("modelopt-nvfp4"))  # both files, the same quantization
    assert model.nvfp4_meta["format"] == "modelopt"


def test_modelopt_config_over_compressed_tensors_tensors(tmp_path):
    p = _copy(tmp_path, "ct-nvfp4")
    for f in ("hf_quant_config.json",):
        shutil.copy(fixture_dir("modelopt-nvfp4") / f, p / f)
    _edit_json(p / "config.json", lambda c: c.pop("quantization_config"))
    with pytest.raises(UnsupportedCheckpointError, match="describes a ModelOpt NVFP4 .* but the tensors are in "
                                                         "the compressed-tensors format .*_(global_scale|packed)"):
        nvfp4.from_pretrained(p)


# --- shards ------------------------------------------------------------------------------------------------------

def _shard_index(p: Path, shard_name: str) -> None:
    t = read_tensors(p)
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: shard_name for k in t}}))


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/outside.safetensors", "sub/../../x.safetensors"])
def test_shard_paths_outside_the_folder_are_refused(tmp_path, name):
    p = _copy(tmp_path, "modelopt-nvfp4")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(p / "model.safetensors", outside)  # a readable file is there: only the rule stops it
    _shard_index(p, name)
    with pytest.raises(ValueError, match=rf"shard '{name}' is outside the checkpoint folder"):
        nvfp4.from_pretrained(p)


def test_shard_in_a_subfolder_is_read(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    (p / "shards").mkdir()
    (p / "model.safetensors").rename(p / "shards" / "part.safetensors")
    from safetensors.torch import load_file

    names = load_file(str(p / "shards" / "part.safetensors"))
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: "shards/part.safetensors" for k in names}}))
    assert nvfp4.from_pretrained(p).nvfp4_meta["quantized"]


def test_bad_index_and_bad_safetensors_name_the_file(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json must have a non-empty weight_map object"):
        nvfp4.from_pretrained(p)
    (p / "model.safetensors.index.json").unlink()
    (p / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        nvfp4.from_pretrained(p)


# --- scale values on disk -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, key, value", [
    ("modelopt-nvfp4", "weight_scale_2", float("nan")),
    ("modelopt-nvfp4", "weight_scale_2", 0.0),
    ("modelopt-nvfp4", "input_scale", -0.5),
    ("ct-nvfp4", "weight_global_scale", float("inf")),
    ("ct-nvfp4", "input_global_scale", 0.0),
])
def test_bad_global_scales_on_disk_are_refused_naming_the_tensor(tmp_path, name, key, value):
    p = _copy(tmp_path, name)
    _rewrite_tensors(p, lambda t: t.update({f"{LAYER}.{key}": torch.full_like(t[f"{LAYER}.{key}"], value)}))
    with pytest.raises(ValueError, match=rf"{LAYER}.{key} must be finite and > 0"):
        nvfp4.from_pretrained(p)


@pytest.mark.parametrize("name", ["modelopt-nvfp4", "ct-nvfp4"])
@pytest.mark.parametrize("byte", [0x7F, 0xC0])
def test_nan_or_negative_block_scales_on_disk_are_refused_naming_the_file(tmp_path, name, byte):
    p = _copy(tmp_path, name)

    def poison(t):
        s = t[f"{LAYER}.weight_scale"].view(torch.uint8).clone()
        s[1, 1] = byte
        t[f"{LAYER}.weight_scale"] = s.view(torch.float8_e4m3fn)

    _rewrite_tensors(p, poison)
    with pytest.raises(ValueError, match=rf"model\.safetensors: {LAYER}: .*weight_scale must hold finite, non-negative"):
        nvfp4.from_pretrained(p)


# --- arguments ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_invariant="no"), "batch_invariant must be True or False, got str"),
    (dict(trust_remote_code=1), "trust_remote_code must be True or False, got int"),
    (dict(dtype=torch.float32), "dtype must be torch.bfloat16 or torch.float16"),
])
def test_from_pretrained_checks_argument_types(kwargs, message):
    with pytest.raises(TypeError, match=message):
        nvfp4.from_pretrained(fixture_dir("modelopt-nvfp4"), **kwargs)
    with pytest.raises(ValueError, match="device 'banana' is not a device"):
        nvfp4.from_pretrained(fixture_dir("modelopt-nvfp4"), device="banana")


# --- one way of building the model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("architectures", [None, [], ["NoSuchArchitectureForCausalLM"]])
def test_model_built_the_same_way_whatever_architectures_says(tmp_path, architectures):
    """Without a known architectures entry the model comes from its model_type, through the same dtype-aware
    construction: float32 buffers (rotary inv_freq) stay float32 and the logits are bitwise those of the normal
    path."""
    ids = torch.randint(4, 29, (2, 12), generator=torch.Generator().manual_seed(0))
    normal = nvfp4.from_pretrained(fixture_dir("modelopt-nvfp4"))
    p = _copy(tmp_path, "modelopt-nvfp4")
    _edit_json(p / "config.json", lambda c: c.pop("architectures") if architectures is None else c.update(architectures=architectures))
    other = nvfp4.from_pretrained(p)
    buffers = {n: b.dtype for n, b in normal.named_buffers() if "inv_freq" in n}
    assert buffers and buffers == {n: b.dtype for n, b in other.named_buffers() if "inv_freq" in n}
    assert set(buffers.values()) == {torch.float32}
    with torch.no_grad():
        assert torch.equal(normal(ids).logits, other(ids).logits)


def test_unknown_model_type_is_a_clear_refusal(tmp_path):
    p = _copy(tmp_path, "modelopt-nvfp4")
    _edit_json(p / "config.json", lambda c: c.update(model_type="no-such-model-type", architectures=["NoSuchModel"]))
    with pytest.raises(UnsupportedCheckpointError, match=r"config\.json: transformers cannot read this config"):
        nvfp4.from_pretrained(p)


def test_weight_shape_error_names_the_unpacked_shape(tmp_path):
    p = _copy(tmp_path, "ct-nvfp4")
    packed = read_tensors(p)[f"{LAYER}.weight_packed"]
    n, half_k = packed.shape
    _rewrite_tensors(p, lambda t: t.update({f"{LAYER}.weight_shape": torch.tensor([n, half_k])}))
    with pytest.raises(ValueError, match=rf"weight_shape must be \({n}, {2 * half_k}\) \(the unpacked shape of "
                                         rf"weight_packed \({n}, {half_k}\).*got \({n}, {half_k}\)"):
        nvfp4.from_pretrained(p)


def test_config_json_copy_is_compared_on_what_it_states(tmp_path):
    """An export whose config.json names only quant_method and quant_algo (no exclude list) agrees with an
    hf_quant_config.json that lists exclusions; a different exclude list does not (above)."""
    p = _copy(tmp_path, "modelopt-nvfp4")
    _edit_json(p / "config.json", lambda c: c.update(quantization_config={"quant_method": "modelopt", "quant_algo": "NVFP4"}))
    assert nvfp4.from_pretrained(p).nvfp4_meta["ignore"] == ["lm_head", "model.embed_tokens"]
    _edit_json(p / "config.json", lambda c: c.update(quantization_config={"quant_method": "modelopt"}))
    assert nvfp4.from_pretrained(p).nvfp4_meta["activation"] == "static"
