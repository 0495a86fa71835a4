"""The one exception tree of backfilld.

Every error a user can see is a BackfilldError; its docstring is its default message. Driver errors are
wrapped at the engine boundary (engines/) into these, so nothing above the engines knows a driver.
"""

from __future__ import annotations

# What stands in an error's text where the database quoted a row's value (a cast that failed, a duplicate
# entry): the engines translate their drivers' errors without the values (engines/*/engine.py, translate_*), so
# that none reaches the state table's error column, a log line or /status. The batch's keys are said instead.
VALUE_NOT_SHOWN = "(value not shown)"


class BackfilldError(Exception):
    """backfilld failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.problems: list[str] = [str(self)]   # what it is made of (errors.combined)


class ConfigError(BackfilldError):
    """The configuration is invalid."""


class SchemaError(BackfilldError):
    """The live schema does not match what the job needs; nothing was written."""


class SpecChangedError(BackfilldError):
    """The job's spec changed since its checkpoint; rerun with --restart to start it over."""


class StateError(BackfilldError):
    """The job's state row is unreadable (a value no backfilld wrote) or gone; nothing was written."""

    def __init__(self, message: str | None = None, *, job: object = None) -> None:
        super().__init__(message)
        self.job = job   # the row's job column, as read


class EngineError(BackfilldError):
    """The database returned an error."""


class RetryableError(EngineError):
    """A transient database error (lock wait, deadlock, serialization failure, lost connection)."""

    def __init__(self, message: str | None = None, *, kind: str = "transient", reconnect: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.reconnect = reconnect
        self.on_writer = False   # raised on a worker's connection, not the job's own (job.JobRunner)


# Every RetryableError.kind the engines and the job raise (metrics label values, exported at 0 from the start;
# "fatal" and "transform" count errors that were not retried).
RETRY_KINDS = ("lock_timeout", "deadlock", "serialization", "canceled", "connection", "timeout", "transient")
ERROR_KINDS = (*RETRY_KINDS, "fatal", "transform")


class ConnectError(RetryableError):
    """Could not connect to the database."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, kind="connection", reconnect=True)


class TLSError(EngineError):
    """The connection's TLS failed, or it is not encrypted where it must be; nothing was written. Not retried:
    a certificate that failed verification or a server without TLS does not change by waiting."""


class JobFailed(BackfilldError):
    """A job stopped with an error; it is recorded in the state table."""


class LeaseHeld(JobFailed):
    """Another backfilld is running this job (it holds the job's lease); nothing was written."""


class TransformError(BackfilldError):
    """A transform raised on a row."""


def combined(problems: list[BackfilldError]) -> BackfilldError:
    """Several bad-input problems found in one look (a job's targets, a config's jobs) as one error: the first
    alone, or "N problems:" and one line each (nested combinations flattened). A SchemaError if any is one."""
    lines = [line for p in problems for line in p.problems]
    if len(lines) == 1:
        return problems[0]
    kind: type[BackfilldError] = SchemaError if any(isinstance(p, SchemaError) for p in problems) else ConfigError
    err = kind(f"{len(lines)} problems:\n" + "\n".join(f"- {line}" for line in lines))
    err.problems = lines
    return err
