"""gateway/logs.py: log lines are written from a thread of their own, in order, and a log
reader that stops reading never blocks the process (nor holds unbounded memory)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest

from gateway import logs
from gateway.logs import JsonFormatter, WriterThreadHandler


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("tlsgate.access", logging.INFO, __file__, 0, message, (), None)


def test_lines_come_out_in_order_and_flush_writes_what_is_pending() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as stream, os.fdopen(read_fd) as reader:
        handler = WriterThreadHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(2000):
            handler.emit(_record(f"line {i}"))
        handler.flush()
        stream.close()
        assert reader.read().splitlines() == [f"line {i}" for i in range(2000)]


def test_a_stalled_reader_never_blocks_the_caller_and_drops_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "MAX_PENDING_BYTES", 64 << 10)
    read_fd, write_fd = os.pipe()  # nobody reads it yet: it fills at 64 KiB
    with os.fdopen(write_fd, "w") as stream, os.fdopen(read_fd) as reader:
        handler = WriterThreadHandler(stream)
        handler.setFormatter(JsonFormatter())
        line = "x" * 200
        started = time.monotonic()
        for _ in range(5000):  # ~1.2 MB: the pipe and the pending limit both overflow
            handler.emit(_record(line))
        assert time.monotonic() - started < 5  # never waited for the reader
        assert handler.dropped > 0
        got: list[str] = []
        drain = threading.Thread(target=lambda: got.extend(reader.read().splitlines()))
        drain.start()
        handler.flush()
        stream.close()
        drain.join(10)
    records = [json.loads(text) for text in got]  # every line, the notice too, is JSON
    notices = [r for r in records if "log lines dropped" in r["message"]]
    assert notices  # one per batch that follows drops
    kept = sum(1 for r in records if r["message"] == line)
    dropped = sum(int(n["message"].split()[0]) for n in notices)
    assert kept + dropped == 5000
    assert kept < 5000
