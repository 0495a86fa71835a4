"""structlog setup: JSON lines when stderr is not a terminal, coloured key=value when it is.

Owns: how the CLI imports structlog (without rich, see import_structlog) and its configuration.
"""

from __future__ import annotations

import logging
import sys

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


def setup(level: str = "info", fmt: str = "auto") -> None:
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
