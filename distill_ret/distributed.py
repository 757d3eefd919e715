"""Multi-process start-up (`jax.distributed.initialize` when asked) and host helpers.

A job runs as one process per host (TPU VM worker, GPU node, or several on one machine for testing). It asks for
multi-process mode either with `--distributed` on the command line or with DISTILL_RET_DISTRIBUTED=1. The
coordinator, the process count and this process's id come from, in order: explicit arguments, the environment
variables below, or jax's own cluster detection (TPU pods, Slurm, Open MPI, ...), which needs none of them.

  DISTILL_RET_COORDINATOR     host:port of process 0's coordination service
  DISTILL_RET_NUM_PROCESSES   total number of processes
  DISTILL_RET_PROCESS_ID      this process's id, 0 .. N-1
"""
import os

import jax

from distill_ret.errors import UserError

ENABLE_VARIABLE = "DISTILL_RET_DISTRIBUTED"
COORDINATOR_VARIABLE = "DISTILL_RET_COORDINATOR"
NUM_PROCESSES_VARIABLE = "DISTILL_RET_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "DISTILL_RET_PROCESS_ID"


def requested_by_environment() -> bool:
    return os.environ.get(ENABLE_VARIABLE, "").lower() in ("1", "true", "yes")


def _int_from_environment(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} must be an integer") from None


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None,
) -> None:
    """Joins the job's processes (call once, before any other jax call that touches devices)."""
    coordinator_address = coordinator_address or os.environ.get(COORDINATOR_VARIABLE) or None
    num_processes = num_processes if num_processes is not None else _int_from_environment(NUM_PROCESSES_VARIABLE)
    process_id = process_id if process_id is not None else _int_from_environment(PROCESS_ID_VARIABLE)
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
    )


def is_main_process() -> bool:
    """True on the one process (index 0) that writes logs, metrics and other single-copy outputs."""
    return jax.process_index() == 0
