"""The files of a checkpoint folder: where the folder is, its JSON files, and its safetensors shards.

Rules: a path that names a local location must be an existing folder (a Hub repository id is fetched only when the
argument cannot be a local path); every parse error names its file; the shards an index names stay inside the
folder (no absolute paths, no `..`); nothing outside the folder is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def looks_local(path: str | os.PathLike) -> bool:
    """Whether `path` can only mean a local location: a Path object, or a string that is absolute, starts with '.' or
    '~', ends with a separator, or has more than one '/' (Hub ids are 'name' or 'owner/name')."""
    if not isinstance(path, str):
        return True
    return (os.path.isabs(path) or path.startswith((".", "~")) or path.endswith(("/", os.sep))
            or path.count("/") > 1 or "\\" in path)


def resolve_folder(path: str | os.PathLike, fn: str) -> Path:
    """The checkpoint folder `path` names: an existing local folder, or a Hub repository fetched by its id."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise NotADirectoryError(f"{fn}: {p} is a file; pass the checkpoint folder that holds config.json")
    if looks_local(path):
        raise FileNotFoundError(f"{fn}: no such checkpoint folder: {p}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise FileNotFoundError(f"{fn}: {path!r} is not a local folder (and huggingface_hub is not installed to fetch "
                                f"it as a Hub repository)") from exc
    try:
        return Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as exc:  # the Hub client's own error types vary by version; the cause stays chained
        raise FileNotFoundError(f"{fn}: {path!r} is not a local folder, and fetching it as a Hugging Face Hub "
                                f"repository failed: {type(exc).__name__}: {exc}") from exc


def read_json(file: Path, fn: str) -> dict[str, Any]:
    """A JSON file that must hold an object; errors name the file."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{fn}: {file} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{fn}: {file} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{fn}: {file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{fn}: {file} must hold a JSON object, got {type(data).__name__}")
    return data


def shard_path(folder: Path, name: object, index: Path, fn: str) -> Path:
    """The shard file `name` as an index names it: a relative path that stays inside `folder`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{fn}: {index}: weight_map values must be shard file names, got {name!r}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ValueError(f"{fn}: {index}: shard {name!r} is outside the checkpoint folder; shards must be relative "
                         f"paths inside {folder}")
    return folder.joinpath(*parts)


def checkpoint_files(folder: Path, fn: str = "nvfp4.from_pretrained") -> list[Path]:
    """The safetensors files of a checkpoint folder: the shards its index names, or model.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index, fn).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{fn}: {index} must have a non-empty weight_map object (tensor name -> shard file)")
        files = sorted({shard_path(folder, v, index, fn) for v in weight_map.values()})
        missing = [str(f.relative_to(folder)) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{fn}: {folder}: shards named in {INDEX_FILE} are missing: {missing}")
        return files
    single = folder / SINGLE_FILE
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{fn}: {folder}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors is read)")
