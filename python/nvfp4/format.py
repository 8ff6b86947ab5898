"""NVFP4 bit-level format: e2m1 codes, nibble packing, e4m3 block scales and the 128x4 scale swizzle.

This module is the single Python source of truth for these layout rules; the C++ side states the same swizzle in
cpp/include/nvfp4/nvfp4.h and tests/cpp/scale_layout_check.cu checks both against CUTLASS's Sm1xxBlkScaledConfig.
"""

from __future__ import annotations

import torch

BLOCK_SIZE = 16  # K elements per e4m3 block scale
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_SUBNORMAL = 2.0**-9
GLOBAL_SCALE_RANGE = E2M1_MAX * E4M3_MAX  # 2688: amax maps here in both checkpoint conventions

# Swizzle atom: 128 rows x 4 scale groups, stored as 512 contiguous bytes.
SWIZZLE_ROWS = 128
SWIZZLE_GROUPS = 4

E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

# Round-to-nearest-even boundaries between consecutive magnitudes. A value exactly on a boundary goes to the
# neighbour with the even code: down at 0.25, 1.25, 2.5, 5.0 and up at 0.75, 1.75, 3.5.
_TIES_ROUND_DOWN = (0.25, 1.25, 2.5, 5.0)
_TIES_ROUND_UP = (0.75, 1.75, 3.5)


def e2m1_codes(x: torch.Tensor, *, signed_zero: bool = True) -> torch.Tensor:
    """Round float32 values to e2m1 codes (uint8, 0..15), RNE, saturating at +-6.

    The sign bit (8) is kept for negative inputs that round to zero: ModelOpt, compressed-tensors and the CUDA
    quantizer all keep it. An input of exactly -0.0 differs: the CUDA quantizer (signbit) keeps it
    (signed_zero=True, the default), while ModelOpt's (`x < 0`) and compressed-tensors' (`torch.sign`) weight
    exports give code 0 (signed_zero=False). NaN maps to code 0: e2m1 has no NaN, and recipes make a NaN block
    visible through its NaN block scale instead.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"e2m1_codes: x must be float32, got {x.dtype}")
    magnitude = x.abs()
    code = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for bound in _TIES_ROUND_DOWN:
        code += (magnitude > bound).to(torch.uint8)
    for bound in _TIES_ROUND_UP:
        code += (magnitude >= bound).to(torch.uint8)
    code = torch.where(torch.isnan(x), torch.zeros_like(code), code)
    negative = torch.signbit(x) & ~torch.isnan(x)
    if not signed_zero:
        negative &= x != 0
    return code | (negative.to(torch.uint8) << 3)


def e2m1_values(codes: torch.Tensor) -> torch.Tensor:
    """Decode e2m1 codes (uint8, 0..15) to float32."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"e2m1_values: codes must be uint8, got {codes.dtype}")
    table = torch.tensor(E2M1_MAGNITUDES + tuple(-m for m in E2M1_MAGNITUDES), dtype=torch.float32, device=codes.device)
    return table[(codes & 0xF).long()]


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Pack codes [..., K] (uint8, K even) into bytes [..., K/2]: element 2j in the low nibble."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"pack_e2m1: codes must be uint8, got {codes.dtype}")
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_e2m1: the last dimension of codes must be even, got {codes.shape[-1]}")
    return (codes[..., 0::2] & 0xF) | ((codes[..., 1::2] & 0xF) << 4)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """Unpack bytes [..., K/2] into codes [..., K]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_e2m1: packed must be uint8, got {packed.dtype}")
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Cast float32 to float8_e4m3fn with RNE, saturating at +-448 and keeping NaN.

    The explicit clamp matters: torch versions before 2026 turn values above 464 into NaN instead of saturating,
    while CUDA's __nv_fp8_e4m3 saturates. torch.clamp propagates NaN. Every NaN becomes the canonical 0x7F, as in
    CUDA's conversion (x86 arithmetic makes sign-set NaNs, which torch would cast to 0xFF).
    """
    if x.dtype != torch.float32:
        raise TypeError(f"to_e4m3: x must be float32, got {x.dtype}")
    return canonical_nan(x).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def canonical_nan(x: torch.Tensor) -> torch.Tensor:
    """Replace every NaN by the positive quiet NaN 0x7FC00000, so NaN bytes do not depend on the hardware."""
    return torch.where(torch.isnan(x), torch.full_like(x, float("nan")), x)


def round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def swizzled_scale_bytes(rows: int, groups: int) -> int:
    """Size in bytes of the swizzled scale buffer for `rows` rows and `groups` 16-element K groups."""
    return round_up(rows, SWIZZLE_ROWS) * round_up(groups, SWIZZLE_GROUPS)


def swizzled_scale_offset(row: int, group: int, groups: int) -> int:
    """Byte offset of the scale of (row, K-group) in the 128x4 swizzled layout."""
    groups4 = round_up(groups, SWIZZLE_GROUPS) // SWIZZLE_GROUPS
    return (
        ((row // 128) * groups4 + group // 4) * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + (group % 4)
    )


def swizzle_scales(scales: torch.Tensor) -> torch.Tensor:
    """Linear scales [rows, groups] (e4m3 or uint8) -> flat uint8 swizzled buffer, zero padded."""
    if scales.dim() != 2:
        raise ValueError(f"swizzle_scales: scales must be 2-D [rows, groups], got shape {tuple(scales.shape)}")
    raw = _as_bytes(scales, "swizzle_scales", "scales")
    rows, groups = raw.shape
    padded_rows, padded_groups = round_up(rows, SWIZZLE_ROWS), round_up(groups, SWIZZLE_GROUPS)
    padded = torch.zeros((padded_rows, padded_groups), dtype=torch.uint8, device=raw.device)
    padded[:rows, :groups] = raw
    # [row tile, 4 row sub-blocks of 32, 32 rows, group tile, 4 groups] -> [row tile, group tile, 32, 4, 4]
    tiles = padded.reshape(padded_rows // 128, 4, 32, padded_groups // 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.contiguous().reshape(-1)


def unswizzle_scales(swizzled: torch.Tensor, rows: int, groups: int) -> torch.Tensor:
    """Inverse of swizzle_scales: flat uint8 buffer -> linear uint8 scales [rows, groups] (padding dropped)."""
    raw = _as_bytes(swizzled, "unswizzle_scales", "swizzled").reshape(-1)
    padded_rows, padded_groups = round_up(rows, SWIZZLE_ROWS), round_up(groups, SWIZZLE_GROUPS)
    if raw.numel() != padded_rows * padded_groups:
        raise ValueError(
            f"unswizzle_scales: swizzled must hold round_up(rows,128)*round_up(groups,4) = "
            f"{padded_rows * padded_groups} bytes for rows={rows}, groups={groups}; got {raw.numel()}"
        )
    tiles = raw.reshape(padded_rows // 128, padded_groups // 4, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(padded_rows, padded_groups)[:rows, :groups].contiguous()


def _as_bytes(t: torch.Tensor, fn: str, arg: str) -> torch.Tensor:
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8)
    if t.dtype == torch.uint8:
        return t
    raise TypeError(f"{fn}: {arg} must be float8_e4m3fn or uint8, got {t.dtype}")
