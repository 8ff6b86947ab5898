"""NVFP4 GEMMs through the Python layer against the bf16 peers a user could run instead, on a shape x M grid.

    python bench/compare.py [--preset llama-3.1-8b,...|all] [--shape NxK,...] [--m 1,16,256] [--quick] [--out DIR]
    python bench/compare.py --plot-only results.json [--out DIR]      # PNGs from an existing JSON (no GPU needed)
    python bench/compare.py --agreement cpp.json py.json              # C++ (nvfp4_bench) vs Python timings
    python bench/compare.py --agreement c1.json,c2.json p1.json,p2.json   # the same, best of repeated runs per row

Series (per shape and M; "<fam>" is sm90, sm100 or sm120, whichever serves the GPU):
  <fam>_invariant, <fam>_fast            the GEMM alone (nvfp4.ops.mm_<fam>_impl) on activations quantized once
  <fam>_invariant_layer, <fam>_fast_layer NvFp4Linear.forward: activation quantizer + GEMM (+ bias)
  quantize_dequant / quantize_nvfp4      the activation quantizer alone
  cublas_bf16                            x @ W.T with bf16 weights of the same shape (torch -> cuBLAS)
  triton_invariant_bf16                  weights dequantized once to bf16 + a fixed-configuration persistent Triton
                                         matmul written here (batch invariant by construction; skipped without triton)
  emulation                              dequantize the NVFP4 weights on every call, then a bf16 matmul
Timing is bench/timing.py's (the method of nvfp4_bench): CUDA-graph replay of back-to-back calls cycling weight copies
(>= 200 MiB in all, the same copy count as nvfp4_bench), a busy-wait kernel in front of the start event, best of the
replays once settled (timing.settled_best), all on one stream; emulation is timed eagerly, after every other series
(a pass of its own at the end).
Invariance is probed for every invariant series (rows 0, M/2, M-1 of an M-row call vs the row alone, bitwise) and
reported for the peers too (cuBLAS is expected to differ at some M). Writes <out>/compare-<gpu>-<date>.json and PNGs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import (  # noqa: E402
    L2_FLUSH_BYTES, M_VALUES, PRESET_NAMES, PRESETS, QUICK_M, QUICK_SHAPES, SPIN_US, WARM_FIRST_MS, WARM_MS, copies_for,
    graph_time_us, loop_time_us, new_shape, nvfp4_weight_bytes, on_timing_stream, read_bandwidth_bytes_per_us,
    source_commit,
)

COPY_CAP = 64  # as nvfp4_bench: enough copies that >= flush bytes stream between two uses of one copy
AGREEMENT_TOLERANCE = 0.05


# ---------------------------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------------------------
class Progress:
    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, dynamic_ncols=True)
        except ImportError:
            self._bar = None
        self.total, self.done, self.desc = total, 0, desc

    def step(self, note: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(note)
            self._bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {self.desc}: {note}", flush=True)

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------------------------------------------
# a fixed-configuration persistent bf16 matmul (the batch-invariant bf16 peer)
# ---------------------------------------------------------------------------------------------------------------
TRITON_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)


def make_triton_matmul():
    """(fn(x [M,K] bf16, w [N,K] bf16) -> [M,N] bf16, None) or (None, why not).

    One configuration for every (M, N, K); each program walks output tiles and reduces each tile over K in one fixed
    order, so an output row never depends on M or on the other rows (rows outside M are masked loads of zeros)."""
    try:
        import torch
        import triton
        import triton.language as tl
    except Exception as e:  # noqa: BLE001 - any import failure means "no triton here"
        return None, f"triton is not importable ({type(e).__name__}: {e})"

    @triton.jit
    def _persistent_mm(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                       NUM_PROGRAMS: tl.constexpr):
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        num_tiles = num_pid_m * num_pid_n
        num_pid_in_group = GROUP_M * num_pid_n
        offs_k = tl.arange(0, BLOCK_K)
        for tile in range(pid, num_tiles, NUM_PROGRAMS):
            group_id = tile // num_pid_in_group
            first_m = group_id * GROUP_M
            group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
            pid_m = first_m + (tile % num_pid_in_group) % group_size
            pid_n = (tile % num_pid_in_group) // group_size
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
            b_ptrs = b_ptr + offs_n[None, :] * stride_bn + offs_k[:, None]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for kb in range(0, tl.cdiv(K, BLOCK_K)):
                k_left = K - kb * BLOCK_K
                a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
                b = tl.load(b_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < k_left), other=0.0)
                acc = tl.dot(a, b, acc)
                a_ptrs += BLOCK_K
                b_ptrs += BLOCK_K
            c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
            tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    cfg = dict(TRITON_CONFIG)
    launch = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
    programs_cache: dict[object, int] = {}

    def matmul(x, w):
        m, k = x.shape
        n = w.shape[0]
        assert x.stride(1) == 1 and w.stride(1) == 1 and w.shape[1] == k
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
        dev = x.device
        if dev not in programs_cache:
            programs_cache[dev] = (torch.cuda.get_device_properties(dev).multi_processor_count
                                   if dev.type == "cuda" else 4)
        programs = programs_cache[dev]
        tiles = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"])
        grid = (min(programs, tiles),)
        kwargs = launch if dev.type == "cuda" else {}
        _persistent_mm[grid](x, w, out, m, n, k, x.stride(0), w.stride(0), out.stride(0), NUM_PROGRAMS=programs,
                             **cfg, **kwargs)
        return out

    return matmul, None


# ---------------------------------------------------------------------------------------------------------------
# measurement (needs a GPU)
# ---------------------------------------------------------------------------------------------------------------
def select_shapes(args) -> list[tuple[str, str, int, int]]:
    shapes = []
    presets = [p for item in (args.preset or []) for p in item.split(",") if p]
    customs = [s for item in (args.shape or []) for s in item.split(",") if s]
    if args.quick and not presets and not customs:
        return list(QUICK_SHAPES)
    if not presets and not customs:
        presets = ["all"]
    for p in presets:
        if p != "all" and p not in PRESET_NAMES:
            raise SystemExit(f"compare.py: unknown preset {p!r} (one of {', '.join(PRESET_NAMES)}, all)")
        shapes += [s for s in PRESETS if p in ("all", s[0])]
    for s in customs:
        try:
            n, k = (int(v) for v in s.lower().split("x"))
        except ValueError:
            raise SystemExit(f"compare.py: --shape {s!r} is not NxK") from None
        if k % 16 or n < 1 or k < 16:
            raise SystemExit(f"compare.py: --shape {s}: K must be a positive multiple of 16")
        shapes.append(("custom", s, n, k))
    return shapes


def row_label(preset: str, name: str, n: int, k: int, m: int) -> str:
    """The start of a printed result line: preset, shape name, N, K, M."""
    return f"{preset:13s} {name:14s} N={n:6d} K={k:6d} M={m:5d}"


def result_row(preset: str, name: str, n: int, k: int, m: int, series: str, kind: str, us: float, copies: int,
               calls: int, invariance: str, nvfp4_weights: bool, read_bytes_per_us: float) -> dict:
    """One result of the JSON: time, TFLOP/s, weight-read rate and fraction of the read-bandwidth floor."""
    row = {"preset": preset, "shape": name, "N": n, "K": k, "M": m, "series": series, "kind": kind,
           "us": round(us, 3), "tflops": round(2 * m * n * k / us / 1e6, 2) if kind != "quantizer" else 0.0,
           "copies": copies, "calls": calls, "invariance": invariance}
    if kind != "quantizer":
        wbytes = nvfp4_weight_bytes(n, k)
        row["weight_GBps"] = round((wbytes if nvfp4_weights else n * k * 2) / us / 1e3, 1)
        if nvfp4_weights:
            row["fraction_of_bw_floor"] = round(wbytes / read_bytes_per_us / us, 4)
    return row


def measure(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        print("compare.py: no CUDA GPU available; nothing measured (use --plot-only to plot an existing JSON)",
              file=sys.stderr)
        raise SystemExit(77)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from gpu_data import random_layer, random_rows

    import nvfp4
    from nvfp4 import _lib, backends, ops
    from nvfp4.backends.blackwell import mm_sm100_impl, mm_sm120_impl
    from nvfp4.backends.sm90 import ACT_BF16, linear_sm90_impl
    from nvfp4.reference import dequantize_weight_blocks

    major, minor = torch.cuda.get_device_capability()
    sm = major * 10 + minor
    archs = tuple(_lib.compiled_archs()) if _lib.load() is not None else ()
    served = backends.for_capability((major, minor))
    fam = served.name if served is not None else None
    if fam is None or fam not in backends.compiled_backends():
        print(f"compare.py: no GEMM of the library serves {torch.cuda.get_device_name()} (sm_{sm}); library archs "
              f"{archs or 'none'}", file=sys.stderr)
        raise SystemExit(3)
    if fam == "sm90" and args.sm90_split_reduce != "auto":
        from nvfp4.backends.sm90 import set_split_reduce

        set_split_reduce(args.sm90_split_reduce)
    if fam == "sm90" and args.sm90_pdl:
        from nvfp4.backends.sm90 import set_pdl

        set_pdl(True)
    if fam == "sm90" and args.sm90_fused != "auto":
        from nvfp4.backends.sm90 import set_fused

        set_fused(args.sm90_fused)
    shapes = select_shapes(args)
    ms = [int(v) for v in args.m.split(",")] if args.m else (QUICK_M if args.quick else M_VALUES)
    calls_arg = args.calls if args.calls else (10 if args.quick else 20)
    flush = args.flush_mb << 20
    triton_mm, triton_why = (None, "disabled (--no-triton)") if args.no_triton else make_triton_matmul()

    read_bytes_per_us = read_bandwidth_bytes_per_us()  # for the weight-read floor

    results: list[dict] = []
    failures = 0
    progress = Progress(len(shapes) * len(ms) * (1 if args.no_emulation else 2), "compare")
    progress.write(f"{torch.cuda.get_device_name()} sm_{sm} family {fam}; read bandwidth {read_bytes_per_us / 1e6:.2f} TB/s; "
                   f"triton peer: {'on' if triton_mm else triton_why}")
    for preset, name, n, k in shapes:
        wbytes = nvfp4_weight_bytes(n, k)
        copies = copies_for(wbytes, flush, COPY_CAP)
        if fam != "sm90" and (k % 32 or n % 8):
            progress.write(f"{name} {n}x{k}: {fam} GEMM-only series need K % 32 == 0 and N % 8 == 0; layer only")
        inv_layers = [random_layer(n, k, seed=c) for c in range(copies)]
        fast_layers = []
        for layer in inv_layers:  # the same buffers, the other mode
            fast = copy.copy(layer)
            fast.batch_invariant = False
            fast_layers.append(fast)
        l0 = inv_layers[0]
        w0, ws0 = l0.modelopt_weights()
        w_bf16_0 = (dequantize_weight_blocks(w0, ws0.view(torch.uint8)) * l0.weight_scale_2).to(torch.bfloat16)
        bf16_copies = copies_for(n * k * 2, flush, COPY_CAP)
        w_bf16 = [w_bf16_0] + [w_bf16_0.clone() for _ in range(bf16_copies - 1)]
        new_shape()

        for m in ms:
            x = random_rows(m, k, seed=m)
            calls = max(calls_arg, copies)
            flops = 2 * m * n * k

            def add(series, kind, us, cps, cls, invariance="", nvfp4_weights=True):
                results.append(result_row(preset, name, n, k, m, series, kind, us, cps, cls, invariance,
                                          nvfp4_weights, read_bytes_per_us))
                return us

            def probe(fn) -> str:
                """'ok' when rows 0, M/2, M-1 of fn(x) equal fn(x[r:r+1]) bitwise, else 'differs'."""
                out = fn(x)
                for r in sorted({0, m // 2, m - 1}):
                    if not torch.equal(out[r: r + 1], fn(x[r: r + 1])):
                        return "differs"
                return "ok"

            # --- our kernels -----------------------------------------------------------------------------------
            line = {}
            if fam == "sm90":
                act, alpha = ops.quantize_activations_dequant_impl(x, None, l0.weight_scale_2.reshape(1))
                t = graph_time_us(lambda i: (lambda: ops.quantize_activations_dequant_impl(
                    x, None, l0.weight_scale_2.reshape(1))), 1, calls_arg, args.replays)
                line["quantize_dequant"] = add("quantize_dequant", "quantizer", t, 1, calls_arg)

                def gemm(L, inv, a=act, al=alpha):
                    return linear_sm90_impl(a, L.weight, al, None, L.bias, ACT_BF16, inv, n)
            elif k % 32 == 0 and n % 8 == 0:
                impl = mm_sm100_impl if fam == "sm100" else mm_sm120_impl
                packed, scales, alpha = ops.quantize_activations_nvfp4_impl(x, None, l0.weight_scale_2.reshape(1))
                t = graph_time_us(lambda i: (lambda: ops.quantize_activations_nvfp4_impl(
                    x, None, l0.weight_scale_2.reshape(1))), 1, calls_arg, args.replays)
                line["quantize_nvfp4"] = add("quantize_nvfp4", "quantizer", t, 1, calls_arg)

                def gemm(L, inv, a=(packed, scales), al=alpha):
                    return impl(a[0], a[1], L.weight, L.weight_scale, al, L.bias, torch.bfloat16, inv)
            else:
                gemm = None
            for inv, mode in ((True, "invariant"), (False, "fast")):
                layers = inv_layers if inv else fast_layers
                if gemm is not None:
                    t = graph_time_us(lambda i, L=layers: (lambda: gemm(L[i], inv)), copies, calls, args.replays)
                    line[f"{fam}_{mode}"] = add(f"{fam}_{mode}", "gemm", t, copies, calls)
                inv_result = ""
                if inv:
                    inv_result = probe(inv_layers[0])
                    if inv_result != "ok":
                        failures += 1
                        progress.write(f"INVARIANCE FAILURE: {fam} invariant layer N={n} K={k} M={m}")
                t = graph_time_us(lambda i, L=layers: (lambda: L[i](x)), copies, calls, args.replays)
                line[f"{fam}_{mode}_layer"] = add(f"{fam}_{mode}_layer", "layer", t, copies, calls, inv_result)

            # --- peers -----------------------------------------------------------------------------------------
            cls = max(calls_arg, bf16_copies)
            if not args.no_cublas:
                t = graph_time_us(lambda i: (lambda: x @ w_bf16[i].t()), bf16_copies, cls, args.replays)
                line["cublas_bf16"] = add("cublas_bf16", "peer", t, bf16_copies, cls,
                                          probe(lambda a: a @ w_bf16_0.t()), nvfp4_weights=False)
            if triton_mm is not None:
                t = graph_time_us(lambda i: (lambda: triton_mm(x, w_bf16[i])), bf16_copies, cls, args.replays)
                line["triton_invariant_bf16"] = add("triton_invariant_bf16", "peer", t, bf16_copies, cls,
                                                    probe(lambda a: triton_mm(a, w_bf16_0)), nvfp4_weights=False)

            inv_us = line.get(f"{fam}_invariant") or line.get(f"{fam}_invariant_layer")
            summary = " ".join(f"{s} {us:.1f}" for s, us in line.items())
            progress.write(f"{row_label(preset, name, n, k, m)}  {summary}  (us)"
                           + (f"  inv {flops / inv_us / 1e6:.1f} TF/s" if inv_us else ""))
            progress.step(f"{name} M={m}")
            del x
        del inv_layers, fast_layers, w_bf16, w_bf16_0
        torch.cuda.empty_cache()

    # The emulation peer last, in a pass of its own: its eager, allocation-heavy calls slow the graph-timed GEMM
    # rows measured after them (6144x4096 at M = 4 after the M = 2 emulation: 16.0 us, without it 15.3 us).
    if not args.no_emulation:
        for preset, name, n, k in shapes:
            l0 = random_layer(n, k, seed=0)  # inv_layers[0] of the shape
            w_packed, w_scales = l0.modelopt_weights()  # the checkpoint layout the emulation reads
            w_scales = w_scales.view(torch.uint8)

            def emulate(a):
                w = (dequantize_weight_blocks(w_packed, w_scales) * l0.weight_scale_2).to(torch.bfloat16)
                return torch.nn.functional.linear(a, w, l0.bias)

            for m in ms:
                x = random_rows(m, k, seed=m)
                t = loop_time_us(lambda: emulate(x), iters=args.emulation_iters)
                results.append(result_row(preset, name, n, k, m, "emulation", "peer", t, 1, args.emulation_iters, "",
                                          True, read_bytes_per_us))
                progress.write(f"{row_label(preset, name, n, k, m)}  emulation {t:.1f}  (us)")
                progress.step(f"{name} M={m} emulation")
            del l0
            torch.cuda.empty_cache()
    progress.close()

    props = torch.cuda.get_device_properties(0)
    commit = source_commit()
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = ""
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    return {
        "tool": "compare.py", "date": datetime.date.today().isoformat(), "gpu": props.name, "sm": sm,
        "sms": props.multi_processor_count, "driver": driver, "torch": torch.__version__, "triton": triton_version,
        "nvfp4": nvfp4.__version__, "commit": commit or "unknown", "family": fam,
        "read_bandwidth_TBps": round(read_bytes_per_us / 1e6, 3), "flush_bytes": flush, "calls": calls_arg,
        "replays": args.replays, "spin_us": SPIN_US, "warm_ms": WARM_MS, "warm_first_ms": WARM_FIRST_MS,
        "method": "CUDA-graph replay of back-to-back calls cycling weight copies (>= flush_bytes in all, at most 64 "
                  "copies), a busy-wait kernel before the start event, after warm_ms of untimed replays (warm_first_ms for a shape's first measurement), best of the replays once `replays` in a row gave no new best (0.5%), "
                  "setup, capture and replays on one stream; emulation timed as eager back-to-back calls, in a last "
                  "pass after every other series",
        "triton_peer": {"config": TRITON_CONFIG, "skipped": triton_why} if triton_why else {"config": TRITON_CONFIG},
        "invariance_failures": failures,
        "results": results,
    }


# ---------------------------------------------------------------------------------------------------------------
# plots (no GPU, no torch: matplotlib only)
# ---------------------------------------------------------------------------------------------------------------
SERIES_STYLE = {
    "invariant": dict(color="tab:red", lw=2.2),
    "fast": dict(color="tab:orange", lw=1.6),
    "invariant_layer": dict(color="tab:red", lw=1.2, ls="--"),
    "fast_layer": dict(color="tab:orange", lw=1.0, ls="--"),
    "cublas_bf16": dict(color="tab:blue", lw=1.6),
    "triton_invariant_bf16": dict(color="tab:green", lw=1.6),
    "emulation": dict(color="tab:gray", lw=1.2),
    "quantize": dict(color="tab:purple", lw=1.0, ls=":"),
}


def _style(series: str) -> dict:
    if series.startswith("quantize"):
        return SERIES_STYLE["quantize"]
    for fam in ("sm90_", "sm100_", "sm120_"):
        if series.startswith(fam):
            return SERIES_STYLE.get(series[len(fam):], {})
    return SERIES_STYLE.get(series, {})


def _family(results) -> str | None:
    for r in results:
        if r["series"].endswith("_invariant"):
            return r["series"][: -len("_invariant")]
    for r in results:
        if r["series"].endswith("_invariant_layer"):
            return r["series"][: -len("_invariant_layer")]
    return None


def plot(report: dict, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    by_shape: dict[tuple, dict[str, list[tuple[int, dict]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_shape[(r["preset"], r["shape"], r["N"], r["K"])][r["series"]].append((r["M"], r))
    shapes = list(by_shape)
    title = f"{report.get('gpu', '?')} - {report.get('tool', '')} {report.get('date', '')} ({report.get('commit', '')})"
    cols = min(4, len(shapes)) or 1
    rows_ = (len(shapes) + cols - 1) // cols or 1
    paths = []

    for metric, ylabel, fname, logy in (("us", "time per call (us)", "time", True),
                                        ("tflops", "TFLOP/s", "tflops", False)):
        fig, axes = plt.subplots(rows_, cols, figsize=(4.6 * cols, 3.6 * rows_), squeeze=False)
        for ax, key in zip(axes.flat, shapes):
            for series, pts in sorted(by_shape[key].items()):
                pts = sorted(pts, key=lambda p: p[0])
                if metric == "tflops" and pts and pts[0][1]["kind"] == "quantizer":
                    continue
                ax.plot([p[0] for p in pts], [p[1][metric] for p in pts], marker=".", label=series, **_style(series))
            ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            ax.set_title(f"{key[0]} {key[1]}  N={key[2]} K={key[3]}", fontsize=9)
            ax.set_xlabel("M (tokens)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        for ax in list(axes.flat)[len(shapes):]:
            ax.axis("off")
        handles, labels = {}, {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(5, len(handles)),
                   fontsize=8)
        fig.suptitle(f"{ylabel} vs M - {title}", fontsize=10)
        fig.tight_layout(rect=(0, 0.06, 1, 0.96))
        path = out_dir / f"{stem}-{fname}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    # ratios: one panel per ratio, one line per shape
    fam = _family(results)
    if fam:
        inv = f"{fam}_invariant" if any(r["series"] == f"{fam}_invariant" for r in results) else f"{fam}_invariant_layer"
        suffix = inv[len(fam) + len("_invariant"):]
        ratios = [
            (f"{fam}_fast{suffix}", "invariant / fast time (cost of invariance)", False),
            ("cublas_bf16", "cuBLAS bf16 / invariant time (>1: NVFP4 faster)", True),
            ("triton_invariant_bf16", "invariant bf16 Triton / invariant time", True),
            ("emulation", "emulation / invariant time", True),
        ]
        ratios = [r for r in ratios if any(x["series"] == r[0] for x in results)]
        if ratios:
            fig, axes = plt.subplots(1, len(ratios), figsize=(4.8 * len(ratios), 3.8), squeeze=False)
            for ax, (other, label, other_over_inv) in zip(axes.flat, ratios):
                for key in shapes:
                    a = {m: r["us"] for m, r in by_shape[key].get(inv, [])}
                    b = {m: r["us"] for m, r in by_shape[key].get(other, [])}
                    ms = sorted(set(a) & set(b))
                    if not ms:
                        continue
                    ys = [b[m] / a[m] if other_over_inv else a[m] / b[m] for m in ms]
                    ax.plot(ms, ys, marker=".", lw=1.2, label=f"{key[1]} {key[2]}x{key[3]}")
                ax.axhline(1.0, color="black", lw=0.8)
                ax.set_xscale("log", base=2)
                if other == "emulation":
                    ax.set_yscale("log")
                ax.set_title(label, fontsize=9)
                ax.set_xlabel("M (tokens)")
                ax.grid(True, which="both", alpha=0.3)
            axes.flat[0].legend(fontsize=6)
            fig.suptitle(f"ratios ({inv}) - {title}", fontsize=10)
            fig.tight_layout(rect=(0, 0, 1, 0.93))
            path = out_dir / f"{stem}-ratios.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


def print_summary(report: dict) -> None:
    results = report["results"]
    fam = _family(results)
    if not fam:
        return
    idx = {(r["N"], r["K"], r["M"], r["series"]): r["us"] for r in results}
    shapes = sorted({(r["preset"], r["shape"], r["N"], r["K"]) for r in results}, key=lambda s: (s[0], s[2], s[3]))
    peers = ["cublas_bf16", "triton_invariant_bf16", "emulation"]
    print(f"\n{'shape':34s} {'M':>5s} {'inv us':>9s} {'inv/fast':>9s} " + " ".join(f"{p + '/inv':>22s}" for p in peers))
    for preset, name, n, k in shapes:
        ms = sorted({r["M"] for r in results if r["N"] == n and r["K"] == k})
        for m in (ms[0], ms[-1]) if len(ms) > 1 else ms:
            inv = idx.get((n, k, m, f"{fam}_invariant")) or idx.get((n, k, m, f"{fam}_invariant_layer"))
            if not inv:
                continue
            fast = idx.get((n, k, m, f"{fam}_fast"))
            cells = [f"{idx[(n, k, m, p)] / inv:22.2f}" if (n, k, m, p) in idx else f"{'-':>22s}" for p in peers]
            print(f"{preset + ' ' + name + f' {n}x{k}':34s} {m:5d} {inv:9.2f} "
                  f"{(inv / fast if fast else float('nan')):9.3f} " + " ".join(cells))


# ---------------------------------------------------------------------------------------------------------------
# C++ vs Python agreement
# ---------------------------------------------------------------------------------------------------------------
def _load_runs(paths: list[str]) -> tuple[dict, list[dict]]:
    """The first report, and per report its results keyed by (N, K, M, series)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    return reports[0], [{(r["N"], r["K"], r["M"], r["series"]): r for r in rep["results"]} for rep in reports]


def _best_of_runs(runs: list[dict]) -> dict:
    """Per key, the row with the smallest time over the runs."""
    best: dict = {}
    for run in runs:
        for key, r in run.items():
            if key not in best or r["us"] < best[key]["us"]:
                best[key] = r
    return best


def _run_to_run(runs: list[dict], tolerance: float) -> None:
    """How far one harness's GEMM rows moved between its own runs (the noise the agreement cannot beat)."""
    diffs = [(other[key]["us"] - r["us"]) / r["us"] for other in runs[1:] for key, r in runs[0].items()
             if r["kind"] == "gemm" and key in other]
    if diffs:
        print(f"  run to run ({len(runs)} runs): {sum(abs(d) > tolerance for d in diffs)}/{len(diffs)} GEMM rows "
              f"moved more than {tolerance:.0%} (worst {100 * max(diffs, key=abs):+.2f}%)")


def agreement(cpp_paths: str, py_paths: str, tolerance: float = AGREEMENT_TOLERANCE) -> int:
    """C++ vs Python timings of the same series. Each argument is one JSON or a comma list of JSONs from repeated
    runs of that harness; a row's time is then its best over the runs, as a run's time is its best over replays."""
    cpp_list, py_list = cpp_paths.split(","), py_paths.split(",")
    (cpp, cpp_runs), (py, py_runs) = _load_runs(cpp_list), _load_runs(py_list)
    cpp_best, py_idx = _best_of_runs(cpp_runs), _best_of_runs(py_runs)
    print(f"C++ {cpp.get('tool')} ({', '.join(cpp_list)}) vs Python {py.get('tool')} ({', '.join(py_list)}); "
          f"tolerance {tolerance:.0%}" + ("; best of the runs per row" if len(cpp_list) + len(py_list) > 2 else ""))
    for name, runs in (("C++", cpp_runs), ("Python", py_runs)):
        if len(runs) > 1:
            print(name)
            _run_to_run(runs, tolerance)
    print(f"{'series':26s} {'N':>6s} {'K':>6s} {'M':>5s} {'C++ us':>10s} {'Python us':>10s} {'diff':>8s}  within")
    stats: dict[str, list[float]] = defaultdict(list)
    for key, r in cpp_best.items():
        p = py_idx.get(key)
        if p is None:
            continue
        diff = (p["us"] - r["us"]) / r["us"]
        stats[r["kind"]].append(diff)
        print(f"{r['series']:26s} {r['N']:6d} {r['K']:6d} {r['M']:5d} {r['us']:10.2f} {p['us']:10.2f} "
              f"{100 * diff:+7.2f}%  {'yes' if abs(diff) <= tolerance else 'NO'}")
    print()
    bad_gemm = 0
    for kind, diffs in sorted(stats.items()):
        ok = sum(abs(d) <= tolerance for d in diffs)
        worst = max(diffs, key=abs)
        print(f"{kind:10s}: {ok}/{len(diffs)} within {tolerance:.0%} (worst {100 * worst:+.2f}%, "
              f"median {100 * sorted(diffs)[len(diffs) // 2]:+.2f}%)")
        if kind == "gemm":
            bad_gemm = len(diffs) - ok
    if not stats.get("gemm"):
        print("no GEMM series in common: nothing to compare")
        return 1
    print("VERDICT: C++ and Python GEMM timings " + ("agree" if bad_gemm == 0 else f"DISAGREE on {bad_gemm} rows")
          + f" within {tolerance:.0%}")
    return 0 if bad_gemm == 0 else 1


# ---------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", help=f"comma list of {', '.join(PRESET_NAMES)} or all")
    parser.add_argument("--shape", action="append", help="comma list of NxK")
    parser.add_argument("--m", help="comma list of M values")
    parser.add_argument("--quick", action="store_true", help="smoke preset: llama-3.1-8b qkv/o, M in {1,16,256}")
    parser.add_argument("--calls", type=int, default=0, help="calls per graph (default 20, 10 with --quick)")
    parser.add_argument("--replays", type=int, default=5)
    parser.add_argument("--flush-mb", type=int, default=L2_FLUSH_BYTES >> 20)
    parser.add_argument("--emulation-iters", type=int, default=3)
    parser.add_argument("--no-cublas", action="store_true")
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--no-emulation", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--sm90-split-reduce", choices=("auto", "cluster", "kernel"), default="auto",
                        help="how Hopper split-K calls add their chunk sums (same bits; as nvfp4_bench's flag)")
    parser.add_argument("--sm90-pdl", action="store_true",
                        help="launch the Hopper GEMM as a programmatic dependent of the activation quantizer (same bits)")
    parser.add_argument("--sm90-fused", choices=("auto", "always", "never"), default="auto",
                        help="quantize the activations inside the Hopper GEMM wherever it serves, or never (same bits)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--plot-only", metavar="JSON", help="make the PNGs from an existing JSON and exit")
    parser.add_argument("--agreement", nargs=2, metavar=("CPP_JSON", "PY_JSON"),
                        help="compare nvfp4_bench and compare.py timings of the same series; exit 1 if a GEMM row "
                             "differs by more than 5%%; either side may be a comma list of JSONs from repeated runs "
                             "(best of the runs per row)")
    args = parser.parse_args()
    out_dir = Path(args.out)

    if args.agreement:
        raise SystemExit(agreement(*args.agreement))
    if args.plot_only:
        src = Path(args.plot_only)
        report = json.loads(src.read_text())
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in plot(report, out_dir, src.stem):
            print(f"wrote {p}")
        print_summary(report)
        return

    with on_timing_stream():  # setup and timing on one stream, as nvfp4_bench (timing.py says why)
        report = measure(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["gpu"].replace(" ", "-").replace("/", "-")
    stem = f"compare-{name}-{report['date']}{'-quick' if args.quick else ''}{'-' + args.tag if args.tag else ''}"
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    print_summary(report)
    if not args.no_plots:
        try:
            for p in plot(report, out_dir, stem):
                print(f"wrote {p}")
        except ImportError as e:
            print(f"plots skipped ({e}); make them elsewhere with: python bench/compare.py --plot-only {path}")
    if report["invariance_failures"]:
        print(f"compare.py: {report['invariance_failures']} INVARIANCE FAILURE(S)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
