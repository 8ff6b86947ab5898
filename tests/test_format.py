"""Bit-level format: e2m1 rounding, nibble order, e4m3 casting, the 128x4 swizzle (Python side)."""

import pytest
import torch

from nvfp4 import format as fmt


def test_e2m1_rounding_ties_go_to_even_code():
    x = torch.tensor([0.0, 0.25, 0.2500001, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.0001, 6.0, 1e9, float("inf")])
    assert fmt.e2m1_values(fmt.e2m1_codes(x)).tolist() == [0, 0, 0.5, 1, 1, 2, 2, 4, 4, 6, 6, 6, 6]


def test_e2m1_every_code_round_trips_and_sign_is_kept():
    codes = torch.arange(16, dtype=torch.uint8)
    values = fmt.e2m1_values(codes)
    assert fmt.e2m1_codes(values).tolist() == codes.tolist()  # -0.0 keeps code 8
    assert fmt.e2m1_codes(torch.tensor([-0.1, float("nan"), -float("inf")])).tolist() == [8, 0, 15]


def test_e2m1_rounding_matches_exhaustive_nearest_even():
    x = torch.linspace(-7, 7, 200001)
    mags = torch.tensor(fmt.E2M1_MAGNITUDES)
    dist = (x.abs().unsqueeze(-1) - mags).abs()
    best = dist.min(dim=-1).values.unsqueeze(-1)
    candidates = (dist == best).nonzero()
    expected = torch.full((x.numel(),), -1, dtype=torch.long)
    for row, code in candidates.tolist():  # among equidistant codes take the even one
        if expected[row] < 0 or code % 2 == 0:
            expected[row] = code
    got = fmt.e2m1_codes(x).long() & 7
    assert torch.equal(got, expected)


def test_pack_puts_even_element_in_low_nibble():
    codes = torch.tensor([[1, 2, 3, 4]], dtype=torch.uint8)
    assert fmt.pack_e2m1(codes).tolist() == [[0x21, 0x43]]
    rand = torch.randint(0, 16, (7, 64), dtype=torch.uint8)
    assert torch.equal(fmt.unpack_e2m1(fmt.pack_e2m1(rand)), rand)


def test_e4m3_saturates_and_keeps_nan():
    x = torch.tensor([500.0, -1e6, 448.0, float("nan"), 2.0**-10, 2.0**-9])
    out = fmt.to_e4m3(x).float()
    assert out[:3].tolist() == [448.0, -448.0, 448.0]
    assert torch.isnan(out[3])
    assert out[4].item() in (0.0, 2.0**-9)  # RNE tie between 0 and the smallest subnormal goes to 0 (even)
    assert out[5].item() == 2.0**-9


@pytest.mark.parametrize("rows,groups", [(1, 1), (5, 3), (128, 4), (130, 9), (300, 17), (257, 64)])
def test_swizzle_matches_offset_formula_and_inverts(rows, groups):
    scales = torch.randint(1, 256, (rows, groups), dtype=torch.uint8)
    swz = fmt.swizzle_scales(scales)
    assert swz.numel() == fmt.swizzled_scale_bytes(rows, groups)
    filled = torch.zeros_like(swz, dtype=torch.bool)
    for r in range(rows):
        for g in range(groups):
            off = fmt.swizzled_scale_offset(r, g, groups)
            assert swz[off] == scales[r, g]
            filled[off] = True
    assert (swz[~filled] == 0).all(), "padding bytes must be zero"
    assert torch.equal(fmt.unswizzle_scales(swz, rows, groups), scales)


def test_swizzle_accepts_e4m3_and_rejects_other_dtypes():
    s = torch.ones(3, 2).to(torch.float8_e4m3fn)
    assert torch.equal(fmt.swizzle_scales(s)[:2], torch.tensor([0x38, 0x38], dtype=torch.uint8))
    with pytest.raises(TypeError, match="scales must be float8_e4m3fn or uint8"):
        fmt.swizzle_scales(torch.ones(3, 2))
    with pytest.raises(ValueError, match="must be 2-D"):
        fmt.swizzle_scales(torch.ones(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must hold"):
        fmt.unswizzle_scales(torch.zeros(10, dtype=torch.uint8), 3, 2)
