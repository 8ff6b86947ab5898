"""Column- and row-parallel NvFp4Linear: one rank's shard of an N x K layer, with the unsplit layer's bits.

Each class is an NvFp4Linear holding the rank's part of the weights (its state_dict is that part, in ModelOpt form:
in_range/out_range say which part of the unsplit weight it is) and reducing with the unsplit layer's chunk length
chunk_k(N, K), which the shard's own shape would not give. Forward goes through the serving backend's
forward_chunked / chunk_partials / epilogue (backends/base.py); a group of one rank runs the plain forward.
"""

from __future__ import annotations

import torch

from . import backends, parallel_comm as comm
from .activation import per_token_global_scale
from .checks import ACTIVATION_DTYPES, require_dtype, require_tensor
from .chunking import chunk_k
from .format import BLOCK_SIZE
from .linear import NvFp4Linear
from .parallel_plan import RowMode, even_range, row_mode

# ModelOpt state_dict entries by how they split: [N, K/2] and [N, K/16] by rows and K columns, [N] by rows.
_PER_ROW = {"weight": 2, "weight_scale": BLOCK_SIZE}  # entry -> K elements per stored column
_PER_OUTPUT = ("bias",)


class _ParallelNvFp4Linear(NvFp4Linear):
    """The rank's weights [out_range) x [in_range) of an unsplit in_features x out_features layer."""

    def __init__(self, local_in: int, local_out: int, bias: bool, *, group: comm.Group, full_in: int, full_out: int,
                 in_range: tuple[int, int], out_range: tuple[int, int], input_features: int, **kwargs) -> None:
        super().__init__(local_in, local_out, bias, **kwargs)
        self.tp_group = group
        self.tp_degree, self.tp_rank = comm.degree(group), comm.rank(group)
        self.full_in_features, self.full_out_features = full_in, full_out
        self.in_range, self.out_range = in_range, out_range
        self.input_features = input_features  # the width of x this rank receives
        self.chunk = chunk_k(full_out, full_in)  # the unsplit layer's: every shard reduces in its chunks

    def shard_of(self, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's part of the unsplit layer's ModelOpt state_dict."""
        (n0, n1), (k0, k1) = self.out_range, self.in_range
        out = {}
        for key, value in full_state.items():
            if key in _PER_ROW:
                per = _PER_ROW[key]
                out[key] = value[n0:n1, k0 // per:k1 // per].contiguous()
            elif key in _PER_OUTPUT:
                out[key] = value[n0:n1].contiguous()
            else:
                out[key] = value
        return out

    @classmethod
    def _from_full(cls, layer: NvFp4Linear, group: comm.Group, **kwargs) -> "_ParallelNvFp4Linear":
        if not isinstance(layer, NvFp4Linear) or isinstance(layer, _ParallelNvFp4Linear):
            raise TypeError(f"{cls.__name__}.from_full: layer must be an unsplit NvFp4Linear, got "
                            f"{type(layer).__name__}")
        shard = cls(layer.in_features, layer.out_features, layer.bias is not None, group=group,
                    batch_invariant=layer.batch_invariant, device=layer.weight.device, dtype=layer.dtype,
                    activation=layer.activation, backend=layer.backend, **kwargs)
        shard.load_state_dict(shard.shard_of(layer.state_dict()))
        return shard

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        fn = f"{type(self).__name__}.forward"
        require_tensor(fn, "x", x)
        require_dtype(fn, "x", x, ACTIVATION_DTYPES)
        if x.dim() < 1 or x.shape[-1] != self.input_features:
            raise ValueError(f"{fn}: x must have shape [..., {self.input_features}] (this rank's input), got "
                             f"{tuple(x.shape)}")
        if x.device != self.weight.device:
            raise ValueError(f"{fn}: x is on {x.device} but the layer's weights are on {self.weight.device}")
        return x.reshape(-1, self.input_features).contiguous()

    def _backend(self, x2: torch.Tensor) -> backends.Backend:
        return backends.get(self.resolved_backend(x2.device))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, tensor_parallel={self.tp_rank}/{self.tp_degree}, "
                f"unsplit={self.full_out_features}x{self.full_in_features}, out_range={self.out_range}, "
                f"in_range={self.in_range}, chunk={self.chunk}")


class ColumnParallelNvFp4Linear(_ParallelNvFp4Linear):
    """Output features [n0, n1) of an N x K layer; x is the whole input [..., K] on every rank.

    Returns this rank's [..., n1 - n0], or with gather_output=True the whole [..., N], the ranks' parts concatenated
    in rank order (the ranges must then be the equal split). out_range: the default splits N equally by rank;
    replicated KV heads pass their own range."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, group: comm.Group = None,
                 out_range: tuple[int, int] | None = None, gather_output: bool = False, **kwargs) -> None:
        fn = "ColumnParallelNvFp4Linear"
        d, r = comm.degree(group), comm.rank(group)
        even = even_range(fn, "out_features", out_features, d, r) if out_range is None or gather_output else None
        if out_range is None:
            out_range = even
        elif gather_output and tuple(out_range) != even:
            raise ValueError(f"{fn}: gather_output=True needs the equal split of out_features, rank {r} of {d} holds "
                             f"{even}, got out_range={tuple(out_range)}")
        n0, n1 = out_range
        if not 0 <= n0 < n1 <= out_features:
            raise ValueError(f"{fn}: out_range must satisfy 0 <= start < stop <= out_features = {out_features}, got "
                             f"{tuple(out_range)}")
        super().__init__(in_features, n1 - n0, bias, group=group, full_in=in_features, full_out=out_features,
                         in_range=(0, in_features), out_range=(n0, n1), input_features=in_features, **kwargs)
        self.gather_output = bool(gather_output)

    @classmethod
    def from_full(cls, layer: NvFp4Linear, *, group: comm.Group = None, out_range: tuple[int, int] | None = None,
                  gather_output: bool = False) -> "ColumnParallelNvFp4Linear":
        """This rank's shard of an unsplit NvFp4Linear (for in-memory models and tests)."""
        return cls._from_full(layer, group, out_range=out_range, gather_output=gather_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = self._rows(x)
        if x2.shape[0] == 0:
            width = self.full_out_features if self.gather_output else self.out_features
            return x.new_empty((*lead, width))
        backend = self._backend(x2)
        if self.out_features == self.full_out_features:
            y = backend.forward(self, x2)  # the unsplit layer itself
        else:
            y = backend.forward_chunked(self, x2, self.chunk)
        if self.gather_output:
            y = comm.all_gather_last(y, self.tp_group)
        return y.reshape(*lead, y.shape[-1])


class RowParallelNvFp4Linear(_ParallelNvFp4Linear):
    """An N x K layer whose input arrives split along K: x is this rank's [..., K / degree] (ranks in K order).
    Returns the whole [..., N] on every rank, bitwise the unsplit layer's output.

    mode (parallel_plan.row_mode): "chunks" holds all N rows over the rank's K shard and passes the fp32 running
    total of the chunk sums from rank to rank; "gather" holds N / degree rows over all of K and gathers the input;
    "auto" takes "chunks" wherever the K shards hold whole chunks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, group: comm.Group = None,
                 mode: str = "auto", **kwargs) -> None:
        fn = "RowParallelNvFp4Linear"
        d, r = comm.degree(group), comm.rank(group)
        k_shard = even_range(fn, "in_features", in_features, d, r, BLOCK_SIZE)
        self_mode: RowMode | None = None if d == 1 else row_mode(out_features, in_features, d, mode)
        if self_mode == "gather":
            in_range, out_range = (0, in_features), even_range(fn, "out_features", out_features, d, r)
        else:
            in_range, out_range = k_shard, (0, out_features)
        super().__init__(in_range[1] - in_range[0], out_range[1] - out_range[0], bias, group=group,
                         full_in=in_features, full_out=out_features, in_range=in_range, out_range=out_range,
                         input_features=k_shard[1] - k_shard[0], **kwargs)
        self.mode = self_mode

    @classmethod
    def from_full(cls, layer: NvFp4Linear, *, group: comm.Group = None, mode: str = "auto") -> "RowParallelNvFp4Linear":
        """This rank's shard of an unsplit NvFp4Linear (for in-memory models and tests)."""
        return cls._from_full(layer, group, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = self._rows(x)
        if x2.shape[0] == 0:
            return x.new_empty((*lead, self.full_out_features))
        backend = self._backend(x2)
        if self.mode is None:
            y = backend.forward(self, x2)
        elif self.mode == "gather":
            whole_rows = comm.all_gather_last(x2, self.tp_group)
            y = comm.all_gather_last(backend.forward_chunked(self, whole_rows, self.chunk), self.tp_group)
        else:
            y = self._chunks_forward(backend, x2)
        return y.reshape(*lead, self.full_out_features)

    def _chunks_forward(self, backend: backends.Backend, x2: torch.Tensor) -> torch.Tensor:
        row_scale = None
        if self.activation == "per-token":  # the per-token scale comes from the whole row
            row_scale = per_token_global_scale(comm.global_row_amax(x2, self.tp_group).unsqueeze(-1))
        partials, alpha = backend.chunk_partials(self, x2, self.chunk, row_scale)
        total = comm.chain_chunk_sums(partials, self.tp_group)
        if total is not None:
            y = backend.epilogue(self, total, alpha, x2.dtype)
        else:
            y = torch.empty((x2.shape[0], self.full_out_features), dtype=x2.dtype, device=x2.device)
        return comm.broadcast_from_last(y, self.tp_group)
