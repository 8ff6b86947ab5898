"""`python -m nvfp4 {info,check,demo}`.

info:  versions, compiled architectures, the kernel that serves this device (nvfp4.kernel_info()).
check: batch-invariance self-test through NvFp4Linear over a set of shapes on this device; a pass/fail table and a
       non-zero exit status on failure. Without a GPU it checks the reference path and says plainly that no kernel
       was checked; --device cuda on a machine that cannot run a kernel fails.
Argument errors are argparse-style (exit status 2); a command that fails reports one line (exit status 1).
demo:  loads a committed NVFP4 checkpoint made by ModelOpt (on a GPU the 768-wide one, on CPU the 128-wide one;
       or --model PATH), places a needle prompt at random positions in batches of changing size and shows that its
       logits, greedy tokens and decode-step logits are identical with invariance on and, on a GPU, that they
       change with it off; with timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

DEFAULT_CHECK_SHAPES = ((1, 64, 64), (16, 160, 2048), (17, 352, 1984), (64, 320, 1008), (65, 128, 4096))
BATCH_SIZES = (1, 2, 3, 5, 8, 11, 16, 17)  # other prompts next to the needle
# On a GPU the demo uses prompts long enough that decode attends over > 1024 cached tokens, where torch's SDPA picks
# a KV split from the batch size (docs/models.md), and batches up to 64 rows.
GPU_BATCH_SIZES = (1, 3, 7, 15, 31, 63)
GPU_PROMPT_LEN = 1100


def _say(msg: str) -> None:
    print(msg, flush=True)


class UsageError(Exception):
    """A command-line argument this machine or this model cannot serve: reported argparse-style, exit status 2."""


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(text: str | None) -> torch.device:
    """--device: cpu or cuda[:N], and it must exist here."""
    if text is None:
        return _device()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r} is not a device; use cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text!r}: nvfp4 runs on cpu or cuda[:N] devices")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


# --- needle ----------------------------------------------------------------------------------------------------


def needle_batches(vocab: tuple[int, int], prompt_len: int, sizes, seed: int):
    """Yields (batch input_ids [B, L], needle position) for each size B of *other* prompts (B+1 rows in all)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = vocab
    needle = torch.randint(lo, hi, (1, prompt_len), generator=g)
    yield needle, 0
    for b in sizes:
        others = torch.randint(lo, hi, (b, prompt_len), generator=g)
        pos = int(torch.randint(0, b + 1, (1,), generator=g))
        yield torch.cat([others[:pos], needle, others[pos:]]), pos


def greedy(model, ids: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with the KV cache, `new_tokens` tokens, no early stop (equal-length prompts, no padding).
    Returns the new token ids [B, T] and the logits of every decode step [B, T, V] (so that a decode step whose
    logits moved without changing the argmax still counts as a difference)."""
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, pad_token_id=0, num_beams=1, return_dict_in_generate=True, output_logits=True,
    )
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, dim=1)


def needle_run(model, *, vocab=(4, 29), prompt_len=16, sizes=BATCH_SIZES, seed=0, new_tokens=32,
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Needle prompt alone, then inside batches of `sizes` other prompts: per size, whether its prompt logits (all
    positions), its greedy tokens and the logits of every decode step equal the alone run bitwise, the max |diff|
    of the prompt logits, and timings."""
    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    alone_logits = alone_tokens = alone_steps = None
    with torch.no_grad():
        for ids, pos in needle_batches(vocab, prompt_len, sizes, seed):
            ids = ids.to(device)
            t0 = time.perf_counter()
            logits = model(ids).logits[pos].float().cpu()
            t1 = time.perf_counter()
            if new_tokens:
                tokens, steps = greedy(model, ids, new_tokens)
                tokens, steps = tokens[pos].cpu(), steps[pos].float().cpu()
            else:
                tokens = steps = torch.empty(0)
            t2 = time.perf_counter()
            if alone_logits is None:
                alone_logits, alone_tokens, alone_steps = logits, tokens, steps
            row = {
                "batch": ids.shape[0], "position": pos,
                "logits_equal": bool(torch.equal(logits, alone_logits)),
                "max_abs_diff": float((logits - alone_logits).abs().max()),
                "tokens_equal": bool(torch.equal(tokens, alone_tokens)),
                "decode_logits_equal": bool(torch.equal(steps, alone_steps)),
                "forward_s": t1 - t0, "generate_s": t2 - t1,
            }
            rows.append(row)
            if progress:
                progress(f"  batch {row['batch']:>3} (needle at {pos:>2}): logits {'equal' if row['logits_equal'] else 'DIFFER'}, "
                         f"tokens {'equal' if row['tokens_equal'] else 'DIFFER'}, "
                         f"decode logits {'equal' if row['decode_logits_equal'] else 'DIFFER'}  [{row['forward_s']*1e3:.0f} ms + {row['generate_s']:.2f} s]")
    return rows


# --- commands --------------------------------------------------------------------------------------------------


def cmd_info(args) -> int:
    import nvfp4

    info = {"nvfp4": nvfp4.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    status = 0
    try:
        info["build"] = build_description()
        info.update(nvfp4.kernel_info())
    except Exception as exc:  # a library that fails to load is reported, not a traceback
        info["kernel_info_error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return status


def check_invariance(shapes, device: torch.device, *, activations=("per-token", "static", "none"),
                     progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """For each (M, N, K) and activation mode: every row of an M-row batch (and rows in reversed order, and a
    needle in a batch of other rows) must equal its own M=1 result bitwise."""
    from torch import nn

    from .linear import NvFp4Linear

    results = []
    for m, n, k in shapes:
        for act in activations:
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(m * 7919 + n * 31 + k)
            lin = nn.Linear(k, n, bias=True, dtype=torch.bfloat16)
            with torch.no_grad():
                lin.weight.copy_((torch.randn(n, k, generator=g) * torch.exp2(torch.randint(-8, 8, (n, 1), generator=g).float())).to(torch.bfloat16))
            layer = NvFp4Linear.from_linear(
                lin, batch_invariant=True, input_amax=4.0 if act == "static" else None,
                activation=act if act == "none" else None,
            ).to(device)
            x = (torch.randn(m, k, generator=g) * torch.exp2(torch.randint(-6, 6, (m, k // 16, 1), generator=g).float().repeat_interleave(16, 1).reshape(m, k))).to(torch.bfloat16).to(device)
            try:
                full = layer(x)
                single = torch.cat([layer(x[i:i + 1]) for i in range(m)])
                rev = layer(x.flip(0)).flip(0)
                bad = int((~(full == single).all(dim=1) | ~(rev == single).all(dim=1)).sum())
                status, note = ("PASS" if bad == 0 else "FAIL"), f"{bad} rows differ" if bad else ""
            except Exception as exc:  # a missing kernel is a failure of the check, reported, not a crash
                status, note = "ERROR", f"{type(exc).__name__}: {exc}"[:120]
            results.append({"M": m, "N": n, "K": k, "activation": act, "backend": _backend(layer), "status": status,
                            "note": note, "seconds": time.perf_counter() - t0})
            if progress:
                progress(f"  {m:>4} x {n:>4} x {k:>5}  {act:<9} {status}")
    return results


def _backend(layer) -> str:
    try:
        return layer.resolved_backend()
    except Exception as exc:
        return f"none ({type(exc).__name__})"


def build_description() -> str:
    """Whether this installation holds the compiled kernels (a wheel built without nvcc is pure Python)."""
    from . import _lib

    if _lib.library_path() is None:
        return "pure Python: no kernel library (built without nvcc); reference path only, GPU layers raise NoKernelError"
    return f"with the kernel library ({_lib.library_path()})"


def cmd_check(args) -> int:
    device = resolve_device(args.device)
    if device.type == "cpu":
        _say("No CUDA device: checking the CPU reference path (the GPU kernels are not exercised).")
    else:
        _say(f"Checking NvFp4Linear batch invariance on {torch.cuda.get_device_name(device)}.")
    shapes = DEFAULT_CHECK_SHAPES if not args.quick else DEFAULT_CHECK_SHAPES[:2]
    results = check_invariance(shapes, device, progress=_say)
    _say("")
    _say(f"{'M':>5} {'N':>5} {'K':>6}  {'activation':<10} {'backend':<12} {'result':<6} note")
    for r in results:
        _say(f"{r['M']:>5} {r['N']:>5} {r['K']:>6}  {r['activation']:<10} {r['backend']:<12} {r['status']:<6} {r['note']}")
    failed = [r for r in results if r["status"] != "PASS"]
    _say(f"\n{len(results) - len(failed)}/{len(results)} passed" + ("" if not failed else " -- FAILED"))
    if device.type == "cpu":
        _say("No GPU kernel was checked: this run exercised the CPU reference path only and says nothing about a GPU "
             "deployment. On the GPU machine run `python -m nvfp4 check --device cuda`, which fails when no kernel "
             "can run there.")
    return 1 if failed else 0


def identical(row: dict[str, Any]) -> bool:
    """A needle_run row whose prompt logits, greedy tokens and decode-step logits all equal the alone run."""
    return row["logits_equal"] and row["tokens_equal"] and row["decode_logits_equal"]


def bundled_model(device: torch.device) -> Path:
    """The committed demo checkpoint for `device`. GPU: modelopt-nvfp4-wide (hidden 768, made by ModelOpt): wide
    enough that the Hopper kernel splits K into chunks, so invariance off can show its effect. CPU: the tiny
    modelopt-nvfp4 (hidden 128), because the CPU reference path is slow on the wide one and is invariant anyway."""
    name = "modelopt-nvfp4-wide" if device.type == "cuda" else "modelopt-nvfp4"
    here = Path(__file__).resolve()
    for base in (here.parent / "_fixtures" / name, here.parents[2] / "tests" / "fixtures" / name):
        if (base / "config.json").is_file():
            return base
    raise FileNotFoundError(f"the bundled demo model {name} is missing from the installation; pass --model PATH")


def demo_model(args, device: torch.device) -> Path:
    """The demo's checkpoint folder, with --prompt-len and --tokens checked against its context length."""
    from .formats import files

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("safetensors") is None:
        raise RuntimeError("the demo needs transformers and safetensors: pip install 'nvfp4[hf]'")
    path = Path(args.model).expanduser() if args.model else bundled_model(device)
    if not (path / "config.json").is_file():
        raise UsageError(f"--model {args.model}: no checkpoint folder with a config.json there")
    config = files.read_json(path / "config.json", "demo")
    context = config.get("max_position_embeddings")
    prompt_len = args.prompt_len or (GPU_PROMPT_LEN if device.type == "cuda" else 16)
    if isinstance(context, int) and prompt_len + args.tokens > context:
        raise UsageError(f"--prompt-len {prompt_len} + --tokens {args.tokens} = {prompt_len + args.tokens} tokens "
                         f"exceed the model's context of {context} (max_position_embeddings in {path / 'config.json'})")
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and vocab <= 4:  # prompts draw token ids from [4, vocab): the first ids are special
        raise UsageError(f"--model {path}: vocab_size {vocab} leaves no ordinary token ids for the prompts (needs > 4)")
    args.prompt_len = prompt_len
    return path


def cmd_demo(args) -> int:
    device = resolve_device(args.device)
    path = demo_model(args, device)
    from .loading import from_pretrained

    if device.type == "cpu":
        _say("No CUDA device: running the CPU reference path (slow, invariant by construction; the GPU kernels are "
             "not exercised).")
    on_gpu = device.type == "cuda"
    sizes = GPU_BATCH_SIZES if on_gpu else BATCH_SIZES
    sizes = sizes[:3] if args.quick else sizes
    prompt_len = args.prompt_len
    verdicts: dict[bool, bool] = {}
    modes = (True, False) if device.type == "cuda" else (True,)
    for invariant in modes:
        _say(f"\nLoading {path} (batch_invariant={invariant}) on {device} ...")
        t0 = time.perf_counter()
        model = from_pretrained(path, batch_invariant=invariant, device=device)
        _say(f"  loaded in {time.perf_counter() - t0:.2f} s")
        vocab = (4, min(int(model.config.vocab_size), 29 if args.model is None else int(model.config.vocab_size)))
        _say(f"Needle prompt ({prompt_len} tokens) in batches of {', '.join(str(s + 1) for s in sizes)} rows, "
             f"{args.tokens} greedy tokens each:")
        rows = needle_run(model, vocab=vocab, prompt_len=prompt_len, sizes=sizes, seed=args.seed,
                          new_tokens=args.tokens, progress=_say)
        verdicts[invariant] = all(identical(r) for r in rows)
        _say(f"  => {'identical' if verdicts[invariant] else 'DIFFERENT'} logits and tokens across batch sizes "
             f"(invariance {'on' if invariant else 'off'})")
        del model
    _say("")
    if not verdicts[True]:
        _say("FAILED: with batch_invariant=True the needle's outputs changed with the batch.")
        return 1
    _say("With batch_invariant=True the needle's logits and tokens are bitwise the same in every batch.")
    if False in verdicts:
        _say("With batch_invariant=False they " + (
            "changed with the batch (torch's attention splits the KV cache by a count chosen from the batch size; "
            "the fast GEMMs and cuBLAS pick their K reduction from the number of tokens)." if not verdicts[False] else
            "happened not to change at these batch sizes on this GPU (nothing is promised in that mode)."))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nvfp4", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, compiled archs and the kernel for this device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info, parser=p)
    p = sub.add_parser("check", help="batch-invariance self-test of NvFp4Linear on this device")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available); with cuda the "
                   "check fails when no kernel can run")
    p.add_argument("--quick", action="store_true", help="fewer shapes")
    p.set_defaults(fn=cmd_check, parser=p)
    p = sub.add_parser("demo", help="needle prompt in batches of changing size on a tiny NVFP4 model")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled tiny ModelOpt NVFP4 model)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--tokens", type=_int_at_least(0), default=32, help="greedy tokens per run (default 32)")
    p.add_argument("--prompt-len", type=_int_at_least(1), default=None,
                   help=f"tokens per prompt (default {GPU_PROMPT_LEN} on a GPU, 16 on CPU); with --tokens at most "
                        f"the model's max_position_embeddings")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--quick", action="store_true", help="fewer batch sizes")
    p.set_defaults(fn=cmd_demo, parser=p)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as exc:
        args.parser.error(str(exc))  # argparse's format and exit status 2
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failure of the command, reported in one line, never a traceback
        message = " ".join(str(exc).split())
        print(f"{args.parser.prog}: error: {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
        return 1
    return 0  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
