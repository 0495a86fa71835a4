"""A job's status: the values stored in the state table, and the label values of backfilld_job_state.

Owns: the one list of statuses. The state table stores Status; /metrics shows one of metric_states(), which
adds what only a running daemon knows: paused by an operator, stopped (by a signal or a turn's end) before
completing.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"        # a row made by an operator request before the job first ran
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


PAUSED = "paused"     # running, held by an operator's pause request
STOPPED = "stopped"   # running in the state table, but this daemon stopped it (it resumes from its checkpoint)


def metric_states() -> tuple[str, ...]:
    """Every label value backfilld_job_state takes, in the order /metrics lists them."""
    return (Status.PENDING.value, Status.RUNNING.value, PAUSED, Status.COMPLETED.value, Status.FAILED.value,
            STOPPED)


def metric_state(status: str, *, paused: bool = False, stopped: bool = False) -> str:
    """The backfilld_job_state label of a job with this stored status."""
    if status == Status.RUNNING and stopped:
        return STOPPED
    if status == Status.RUNNING and paused:
        return PAUSED
    return str(status)
