"""Logging for `tlsgate serve` and its worker processes: text lines, or one JSON object per
line with the fields beside the message (API.md "Logs").

Times are ISO 8601 in UTC with milliseconds (`2026-12-03T16:30:54.123Z`), whatever the
machine's zone. Every logger is under `tlsgate.`. A line with something to say in fields
logs them as `extra={"fields": {...}}`: JSON keys of their own, `key=value` after the text
message (logfmt quoting, so no value can fake another), never a Python repr.

I/O edge.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import TextIO

#: Formatted lines held while the writer thread cannot keep up (a stalled log reader); above
#: this, new lines are dropped and counted, and the count is written when writing resumes.
MAX_PENDING_BYTES = 8 << 20
#: How long the writer gathers lines before it writes them: the most a line waits.
BATCH_SECONDS = 0.05


def setup_logging(level: str, log_format: str) -> None:
    handler = WriterThreadHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs each request at INFO: the etcd store's lease renewals, every few seconds.
    # Its failures reach the log as the store's own lines (tlsgate.store).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def info_with_fields(
    logger: logging.Logger, message: str, fields: dict[str, object], summary: str
) -> None:
    """The access log's one call per connection: `message` is the text line (the fields,
    logfmt), `summary` the JSON line's message (the fields are keys there). Formatted at
    once when the one handler it would reach is this module's
    (`setup_logging`): building a LogRecord and running it through the handler machinery
    cost ~15 us a line, three times what the line itself costs. Any other set-up (a user's
    handlers, a filter, pytest's caplog) gets the ordinary record. The caller has checked
    `logger.isEnabledFor(logging.INFO)`."""
    handler = _only_handler(logger)
    if handler is None:
        logger.info("%s", message, extra={"fields": fields, "line": message, "summary": summary})
        return
    formatter = handler.formatter
    if isinstance(formatter, JsonFormatter):
        handler.write_line(formatter.line(logger.name, "INFO", summary, fields))
    else:
        assert isinstance(formatter, TextFormatter)
        handler.write_line(formatter.line(logger.name, "INFO", message, {}))


def _only_handler(logger: logging.Logger) -> WriterThreadHandler | None:
    """The handler an INFO record of `logger` reaches, if that is exactly one
    WriterThreadHandler with one of this module's formatters and nothing filters on the way
    (the walk `Logger.callHandlers` makes)."""
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or not isinstance(handler, WriterThreadHandler)
                or handler.filters
                or handler.level > logging.INFO
                or not isinstance(handler.formatter, TextFormatter | JsonFormatter)
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


class _Clock:
    """ISO 8601 UTC times with milliseconds, the date and time formatted once per second
    rather than once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def at(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((when - second) * 1000):03d}Z"

    def now(self) -> str:
        return self.at(time.time())


def _fields_of(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class TextFormatter(logging.Formatter):
    """`time level logger message key=value...`, one line."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "line", None)  # the access line: its fields are its text
        fields = {} if line is not None else _fields_of(record)
        stamp = self._clock.at(record.created)
        text = _text_line(stamp, record.name, record.levelname, record.getMessage(), fields)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text

    def line(self, name: str, level: str, message: str, fields: dict[str, object]) -> str:
        """What `format` makes of such a record, at the time now."""
        return _text_line(self._clock.now(), name, level, message, fields)


def _text_line(stamp: str, name: str, level: str, message: str, fields: dict[str, object]) -> str:
    text = f"{stamp} {level} {name} {message}"
    return f"{text} {logfmt(fields)}" if fields else text


def logfmt(fields: dict[str, object]) -> str:
    """`key=value ...`: a value that is not a plain token is written as a quoted string with
    JSON escapes, so whatever a client put in it (CR, LF, NUL, quotes, `key=value`) the line
    stays one line and a value cannot fake another field. None is `-`."""
    texts = ["-" if value is None else str(value) for value in fields.values()]
    if all(texts) and _PLAIN_LOG_VALUE.fullmatch("".join(texts)):  # the usual line, at once
        return " ".join(f"{key}={text}" for key, text in zip(fields, texts, strict=True))
    return " ".join(f"{key}={_log_value(text)}" for key, text in zip(fields, texts, strict=True))


#: A log value written as is: printable ASCII except space, `"`, `=` and backslash.
_PLAIN_LOG_VALUE = re.compile(r"[!#-<>-\[\]-~]+")


def _log_value(text: str) -> str:
    if _PLAIN_LOG_VALUE.fullmatch(text):
        return text
    # ensure_ascii escapes every control and non-ASCII character (U+2028 and NEL split lines
    # in some readers too); DEL is the one non-printable character JSON leaves alone.
    return json.dumps(text).replace("\x7f", "\\u007f")


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        summary = getattr(record, "summary", None)
        out: dict[str, object] = {
            "time": self._clock.at(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": summary if isinstance(summary, str) else record.getMessage(),
        }
        out.update(_fields_of(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)

    def line(self, name: str, level: str, message: str, fields: dict[str, object]) -> str:
        """What `format` makes of such a record, at the time now."""
        out: dict[str, object] = {
            "time": self._clock.now(),
            "level": level,
            "logger": name,
            "message": message,
        }
        out.update(fields)
        return json.dumps(out, default=str)


class WriterThreadHandler(logging.Handler):
    """Formats a record on the caller's thread and writes it from a thread of its own.

    The caller is usually the event loop (one access line per connection): a write to stderr
    is a system call, and when whoever reads stderr (a terminal, journald, a container
    runtime) falls behind, the pipe fills and the write blocks, which would stall every
    connection of the process. Lines are written in order, in batches gathered for up to
    BATCH_SECONDS; past MAX_PENDING_BYTES new ones are dropped and counted rather
    than held without bound. `flush` (called at exit by `logging.shutdown`) writes what is
    pending before it returns.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[str] = []
        self._pending_bytes = 0
        self.dropped = 0
        self._wake = threading.Condition(threading.Lock())
        #: Held while writing: `flush` and the writer thread never interleave their batches.
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None
        #: The writer waits for a notification (nothing was pending); else it wakes by itself.
        self._sleeping = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # as logging.StreamHandler does: report, never raise into the caller
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Queue one formatted line (without its newline) for the writer thread."""
        line += "\n"
        with self._wake:
            if self._pending_bytes + len(line) > MAX_PENDING_BYTES:
                self.dropped += 1
                return
            self._pending.append(line)
            self._pending_bytes += len(line)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            if self._sleeping:
                # Only the first line after a quiet spell wakes the writer: waking a thread
                # (and handing it the GIL) per line cost more than formatting the line.
                self._sleeping = False
                self._wake.notify()

    def _take(self) -> str:
        """What is pending, as one text (the caller holds `_wake`)."""
        batch = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self.dropped:
            notice = logging.LogRecord(
                "tlsgate.logs",
                logging.WARNING,
                __file__,
                0,
                "%d log lines dropped: the log output could not keep up",
                (self.dropped,),
                None,
            )
            self.dropped = 0
            batch += self.format(notice) + "\n"  # in the configured format, JSON included
        return batch

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self.dropped:
                    self._sleeping = True
                    self._wake.wait()
            # Lines keep coming while a connection burst lasts: gather them for a moment and
            # write them in one call, woken by nobody.
            time.sleep(BATCH_SECONDS)
            with self._writing:
                with self._wake:
                    batch = self._take()
                self._write(batch)

    def _write(self, batch: str) -> None:
        if not batch:
            return
        try:
            self.stream.write(batch)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
            pass

    def flush(self) -> None:
        with self._writing:
            with self._wake:
                batch = self._take()
            self._write(batch)
