"""Structured JSON logs on stdout, each line carrying the active trace and span ids.

Log only identifiers that are free of PHI (pseudonyms, content hashes, event ids); DICOM values,
file names from a PACS or study UIDs never go into a log line. A traceback names each
exception by its type and the frames it passed through, never by its message: libraries put
their input in their messages (``UnicodeDecodeError`` quotes the bytes, SQLAlchemy the bound
parameters), and the input may be a patient's file.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from opentelemetry import trace

from fetalmlops.common.settings import Settings

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def without_messages(exc_info: ExcInfo) -> str:
    """The traceback of ``exc_info`` and its causes, each exception shown by its type alone."""
    _, error, _ = exc_info
    if error is None:
        return ""
    chain: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        chain.append(f"Traceback (most recent call last):\n{frames}{type(current).__qualname__}")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    separator = "\n\nwhile handling the exception above, or caused by it:\n\n"
    return separator.join(reversed(chain))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802  (logging's name)
        return without_messages(ei)


class PlainFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
        return without_messages(ei)


def configure_logging(
    settings: Settings, path: Path | None = None, stream: TextIO | None = None
) -> None:
    """Logs of this process to ``stream`` (stdout, where a container's logs are collected;
    stderr for a command whose stdout is its answer), or appended to ``path`` (`fetalmlops up`,
    whose terminal shows its services' table instead)."""
    handler: logging.Handler = (
        logging.StreamHandler(stream or sys.stdout) if path is None else logging.FileHandler(path)
    )
    if settings.log_json:
        handler.setFormatter(JsonFormatter(settings.service_name))
    else:
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # kafka-python logs connection chatter at INFO; keep service logs readable.
    logging.getLogger("kafka").setLevel(logging.WARNING)
