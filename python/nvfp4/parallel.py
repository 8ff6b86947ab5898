"""nvfp4.parallel: tensor parallelism over torch.distributed with the same bits at every degree.

- ColumnParallelNvFp4Linear: a rank's output features of a layer (q/k/v, gate/up), whole rows in.
- RowParallelNvFp4Linear: a layer whose input arrives split along K (o, down); every rank gets the whole output,
  summed in the unsplit layer's chunk order (parallel_plan.py says how).
- from_pretrained(path, tp_group=...): the sharded Llama-family model on every rank of the group, each rank reading
  only its own tensors; every rank's forward returns the full logits.
- row_mode, head_split, chunks_hold and the *_bytes figures: the placement rules themselves.

Placement, the reduction rule, the invariant preset shapes and the communication volume: docs/parallel.md.
"""

from __future__ import annotations

from .parallel_attention import per_head_sdpa
from .parallel_linear import ColumnParallelNvFp4Linear, RowParallelNvFp4Linear
from .parallel_loading import from_pretrained_tp as from_pretrained
from .parallel_plan import (
    HeadSplit, chunks_hold, column_parallel_bytes, head_split, ring_allreduce_bytes, row_mode, row_parallel_bytes,
)

__all__ = [
    "ColumnParallelNvFp4Linear", "HeadSplit", "RowParallelNvFp4Linear", "chunks_hold", "column_parallel_bytes",
    "from_pretrained", "head_split", "per_head_sdpa", "ring_allreduce_bytes", "row_mode", "row_parallel_bytes",
]
