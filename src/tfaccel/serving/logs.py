"""The server's log: one JSON object per line, so a log pipeline (Loki, Cloud Logging, ``jq``) reads every
field without a parser of ours.

Every line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``; an event
(:func:`log_event`: a model loaded, a request failed) adds ``event`` and its fields at the top level; any
other record adds ``message`` (and ``exception`` with the traceback when there is one). TensorFlow's and
gRPC's Python loggers and Python's warnings go through the same handler (``server._configure_logging``);
what TensorFlow's C++ runtime prints goes to the file descriptor directly and is not ours to format.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

__all__ = ["JsonLines", "log_event"]

logger = logging.getLogger("tfaccel.serving")

#: the attribute a record carries an event's fields in
_FIELDS = "tfaccel_event"


def log_event(event: str, **fields: object) -> None:
    """One line for a lifecycle event or a failed request; the message is the same JSON, so a handler
    without :class:`JsonLines` still shows every field.
    """
    record = {"event": event, **fields}
    logger.info("%s", json.dumps(record, sort_keys=True, default=str), extra={_FIELDS: record})


class JsonLines(logging.Formatter):
    """Formats each record as one JSON object on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
