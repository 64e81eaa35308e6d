"""gateway/logs.py: log lines are written from a thread of their own, in order, and a log
reader that stops reading never blocks the process (nor holds unbounded memory)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
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


def _written(handler: WriterThreadHandler, stream: io.StringIO) -> list[str]:
    handler.flush()
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("formatter", [logs.TextFormatter, JsonFormatter])
def test_the_access_lines_short_path_writes_what_the_record_would(
    formatter: type[logging.Formatter],
) -> None:
    stream = io.StringIO()
    handler = WriterThreadHandler(stream)
    handler.setFormatter(formatter())
    logger = logging.getLogger("tlsgate.test-short-path")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    fields: dict[str, object] = {"client": "127.0.0.1:5000", "sni": "a.example", "bytes_up": 5}
    text = "client=127.0.0.1:5000 sni=a.example bytes_up=5"
    logs.info_with_fields(logger, text, fields, "connection")
    logger.info("%s", text, extra={"fields": fields, "line": text, "summary": "connection"})
    short, record = _written(handler, stream)
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    if formatter is JsonFormatter:
        short_out, record_out = json.loads(short), json.loads(record)
        assert stamp.fullmatch(str(short_out.pop("time")))
        record_out.pop("time")
        assert short_out == record_out
        assert short_out["bytes_up"] == 5
        assert short_out["logger"] == "tlsgate.test-short-path"
        # The fields are keys of their own, not repeated in the message.
        assert short_out["message"] == "connection"
    else:
        assert stamp.match(short)
        assert short[24:] == record[24:]  # the same but for the millisecond
        assert short[24:] == " INFO tlsgate.test-short-path " + text


def test_times_are_iso_8601_utc_whatever_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        record = _record("hello")
        record.created = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z
        text = logs.TextFormatter().format(record)
        assert text == "2026-05-28T20:26:40.250Z INFO tlsgate.access hello"
        assert json.loads(JsonFormatter().format(record))["time"] == "2026-05-28T20:26:40.250Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_fields_are_keys_in_json_and_logfmt_in_text() -> None:
    record = _record("configuration swapped")
    record.fields = {"generation": 3, "error": 'a "quoted" value', "none": None}
    text = logs.TextFormatter().format(record)
    assert text.endswith('configuration swapped generation=3 error="a \\"quoted\\" value" none=-')
    out = json.loads(JsonFormatter().format(record))
    assert (out["message"], out["generation"], out["error"], out["none"]) == (
        "configuration swapped",
        3,
        'a "quoted" value',
        None,
    )


def test_any_other_handler_or_filter_gets_the_ordinary_record() -> None:
    stream = io.StringIO()
    handler = WriterThreadHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    records: list[logging.LogRecord] = []

    class Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collector = Collector()
    logger = logging.getLogger("tlsgate.test-short-path-others")
    logger.handlers[:], logger.propagate = [handler, collector], False
    logger.setLevel(logging.INFO)
    logs.info_with_fields(logger, "one", {"n": 1}, "connection")
    assert [r.fields for r in records] == [{"n": 1}]  # type: ignore[attr-defined]
    logger.handlers[:] = [handler]
    logger.addFilter(lambda record: record.getMessage() != "two")
    logs.info_with_fields(logger, "two", {"n": 2}, "connection")  # the filter still decides
    logs.info_with_fields(logger, "three", {"n": 3}, "connection")
    assert [line.rsplit(" ", 1)[1] for line in _written(handler, stream)] == ["one", "three"]
