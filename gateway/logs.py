"""Logging for `tlsgate serve` and its worker processes: text lines, or one JSON object per
line with the access log's fields beside the message (API.md "Logs").

I/O edge.
"""

from __future__ import annotations

import json
import logging


def setup_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)  # structured access-log fields, next to the text line
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)
