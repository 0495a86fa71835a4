"""structlog setup: JSON lines when stderr is not a terminal, coloured key=value when it is.

Owns: how backfilld imports structlog (without rich, see import_structlog; and only once something logs, see
get_logger) and its configuration.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def import_structlog() -> None:
    """Import structlog with rich hidden from it, unless structlog or rich is imported already. The CLI calls this
    before it imports any module that imports structlog.

    structlog imports rich (and through rich.traceback, pygments) whenever rich is installed, only to format the
    exceptions of events logged with exc_info: about as long again as structlog itself, paid by every command.
    backfilld logs no exception (an event carries its error as text), so no line it logs changes
    (tests/unit/test_startup_imports.py compares them); `demo` imports rich for its progress bar, as before.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # meanwhile, `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


class Logger:
    """A module's logger that imports structlog when the module first logs, not when it is imported: `status`,
    `plan` and the other commands that log nothing on their way never pay for structlog (issue 14: `status` in
    under 0.2 s). Each attribute is the structlog logger's (`info`, `bind`, ...), resolved on first use."""

    __slots__ = ("_name", "_log")

    def __init__(self, name: str) -> None:
        self._name = name
        self._log: Any = None

    def __getattr__(self, attr: str) -> Any:
        log = self._log
        if log is None:
            log = self._log = _structlog().get_logger(self._name)
        return getattr(log, attr)


def get_logger(name: str) -> Logger:
    return Logger(name)


# setup()'s arguments, while structlog is not imported yet: applied by _structlog() when the first event is logged
_pending: tuple[str, str] | None = None


def _structlog() -> Any:
    global _pending
    import_structlog()
    import structlog

    if _pending is not None:
        level, fmt = _pending
        _pending = None
        if not structlog.is_configured():  # a test's capture_logs() configured it meanwhile: that one stands
            _configure(level, fmt)
    return structlog


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure logging for this process: at once if structlog is imported, else when the first event is logged."""
    global _pending
    if "structlog" in sys.modules:
        _pending = None
        _configure(level, fmt)
    else:
        _pending = (level, fmt)


def _configure(level: str, fmt: str) -> None:
    import structlog

    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (structlog.processors.JSONRenderer() if json_out
                                            else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
