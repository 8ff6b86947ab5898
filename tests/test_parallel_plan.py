"""Tensor-parallel placement rules (no process group): head splits, the row-parallel reduction per shape and degree,
the communication bound, and the preset table of docs/parallel.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nvfp4.chunking import chunk_k
from nvfp4.parallel import chunks_hold, head_split, ring_allreduce_bytes, row_mode, row_parallel_bytes

ROOT = Path(__file__).resolve().parents[1]
# The layers a Llama-family placement splits along K (row-parallel).
ROW_PARALLEL = ("o_proj", "down_proj")


def _presets() -> list[tuple[str, str, int, int]]:
    rows = []
    for line in (ROOT / "bench" / "presets.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#") and parts[0] not in ("m", "quick-m"):
            rows.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
    return rows


def test_head_split_llama_8b_at_8():
    splits = [head_split(32, 8, 8, r) for r in range(8)]
    assert [(s.q0, s.q1, s.kv0, s.kv1, s.groups) for s in splits[:2]] == [(0, 4, 0, 1, 4), (4, 8, 1, 2, 4)]


def test_head_split_replicates_kv_heads_beyond_their_count():
    splits = [head_split(4, 2, 4, r) for r in range(4)]
    assert [(s.q0, s.kv0, s.groups) for s in splits] == [(0, 0, 1), (1, 0, 1), (2, 1, 1), (3, 1, 1)]
    for r, s in enumerate(splits):  # each rank's query head reads the KV head it reads unsplit
        assert s.q0 // (4 // 2) == s.kv0


@pytest.mark.parametrize("heads,kv,degree,match", [
    (12, 4, 8, "num_attention_heads = 12 must be a multiple of the tensor-parallel degree 8"),
    (12, 3, 4, "num_key_value_heads = 3 below the degree 4 must divide it"),
    (8, 3, 2, "num_attention_heads = 8 must be a multiple of num_key_value_heads = 3"),
    (8, 8, 0, "degree must be an integer >= 1"),
])
def test_head_split_errors_name_the_rule(heads, kv, degree, match):
    with pytest.raises(ValueError, match=match):
        head_split(heads, kv, degree, 0)


@pytest.mark.parametrize("n", [1, 64, 768, 4096, 6144, 28672, 57344])
@pytest.mark.parametrize("k", [2048, 4096, 14336, 18432, 28672])
def test_k_multiple_of_2048_gives_whole_chunks_at_2_4_8(n, k):
    assert all(chunks_hold(n, k, d) for d in (2, 4, 8))


def test_row_mode_errors_name_the_rule():
    with pytest.raises(ValueError, match="K = 520 must split into 4 equal shards that are multiples of 16"):
        row_mode(64, 520, 4)
    with pytest.raises(ValueError, match="mode='chunks' needs K / degree = 64"):
        row_mode(128, 128, 2, "chunks")
    with pytest.raises(ValueError, match="N = 66 into 4 equal parts"):
        row_mode(66, 256, 4)
    with pytest.raises(ValueError, match="K > 7 N"):
        row_mode(32, 768, 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        row_mode(64, 2048, 2, "ring")


def test_row_parallel_bytes_stay_within_twice_a_ring_allreduce():
    for _, layer, n, k in _presets():
        for d in (2, 4, 8):
            for m in (1, 16, 1024):
                mode = row_mode(n, k, d)
                assert row_parallel_bytes(m, n, k, d, mode, per_token=True) <= 2 * ring_allreduce_bytes(m, n, d)


def _doc_table() -> dict[tuple[str, str], list[str]]:
    """docs/parallel.md's preset table: (preset, layer) -> [chunk, mode at 2, 4, 8, bytes vs ring at 2, 4, 8]."""
    text = (ROOT / "docs" / "parallel.md").read_text()
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"\d+ × \d+", cells[2]):
            table[(cells[0], cells[1])] = cells[3:]
    return table


def _ratio(m: int, n: int, k: int, d: int, mode: str) -> str:
    return f"{row_parallel_bytes(m, n, k, d, mode) / ring_allreduce_bytes(m, n, d):.2f}"


def test_docs_preset_table_is_what_the_rules_give():
    table = _doc_table()
    want = {}
    for preset, layer, n, k in _presets():
        if layer in ROW_PARALLEL:
            modes = [row_mode(n, k, d) for d in (2, 4, 8)]
            ratios = [_ratio(1, n, k, d, m) for d, m in zip((2, 4, 8), modes)]
            want[(preset, layer)] = [str(chunk_k(n, k))] + modes + ratios
    assert table == want
