"""Data-parallel training across processes and machines: joining a ``torchrun`` job.

``torchrun --nproc_per_node N -m core train ...`` starts N copies of the train command (and
``--nnodes``/``--node_rank``/``--master_addr`` spread them over machines). Each copy calls
:func:`process_group`, which joins the job (gloo on CPU, NCCL on GPUs) from the environment torchrun
sets; :func:`core.modeling.training.fit_transformer` then trains with DistributedDataParallel. Every
process reads the same store (it is shared; see :mod:`core.data.store`) and builds the same inputs;
process 0 saves the model, the others train into a temporary folder that is deleted.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from core.errors import DataError

# Model kinds whose training is data-parallel (the Transformer; an ensemble's trees fit alike in every process).
PARALLEL_KINDS = ("transformer", "ensemble")


@contextlib.contextmanager
def process_group(kind: str) -> Iterator[tuple[int, int]]:
    """Join the torchrun job of this process when there is one (``WORLD_SIZE`` > 1) and leave it
    afterwards; yields (rank, world size), (0, 1) for a plain run. DataError for a kind that does not
    train data-parallel."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1
        return
    if kind not in PARALLEL_KINDS:
        raise DataError(f"a {kind} model does not train data-parallel (started by torchrun with {world} "
                        "processes).", title="Not data-parallel",
                        hint=f"Run it without torchrun, or train --model {' or '.join(PARALLEL_KINDS)}.")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        yield torch.distributed.get_rank(), torch.distributed.get_world_size()
    finally:
        torch.distributed.destroy_process_group()
