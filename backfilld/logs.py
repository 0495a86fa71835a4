"""structlog setup: JSON lines when stderr is not a terminal, coloured key=value when it is.

Owns: importing structlog for the CLI (without rich, see below) and configuring it. The CLI imports this module
before any other that imports structlog.
"""

from __future__ import annotations

import logging
import sys


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it, unless something already imported rich.

    structlog imports rich (and through rich.traceback, pygments) whenever rich is installed, only to format
    exceptions logged with exc_info: about as long again as structlog itself, for every command. backfilld logs no
    exception (events carry the error as text), so nothing structlog renders changes; `demo` imports rich for its
    progress bar as before, after structlog.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # an import of rich raises ImportError meanwhile
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402 - after the import above, which is the one that loads it

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(level: str = "info", fmt: str = "auto") -> None:
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
