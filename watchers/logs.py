"""structlog set-up: JSON lines off a TTY, a console renderer on one; stdlib logging
(APScheduler) goes through the same processors. Exceptions are rendered without
local variables, which could hold secrets."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog
from structlog.tracebacks import ExceptionDictTransformer

_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
"""structlog's own `dict_tracebacks` includes every frame's local variables (a password
read from the credentials directory, a token in a request): never."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def use_color() -> bool:
    """Colour on a terminal unless NO_COLOR is set to anything (https://no-color.org)."""
    return not os.environ.get("NO_COLOR")


def console_logs(fmt: str, stream: object = None) -> bool:
    """Whether logs are rendered for a person (a terminal, or `console` asked for)."""
    out = stream if stream is not None else sys.stderr
    return fmt == "console" or (fmt == "auto" and bool(getattr(out, "isatty", lambda: False)()))


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: object = None
) -> None:
    out = stream if stream is not None else sys.stderr
    console = console_logs(fmt, out)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=use_color(),
            exception_formatter=structlog.dev.plain_traceback,
            sort_keys=False,
        )
    else:
        renderer = structlog.processors.JSONRenderer()
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if console else [_TRACEBACKS]),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=False,
    )
