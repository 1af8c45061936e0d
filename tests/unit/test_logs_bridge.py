"""Third-party stdlib log records (asyncio, httpx, keyring) reach the daemon log
with their traceback, and masked like everything else."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from takod_daemon import logs

CANARY = "CANARYbridgeSECRET0123456789"
KEY = f"sk-ant-api03-{CANARY}-3f9a"


@pytest.fixture
def json_log(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("json", tmp_path, "info")
    yield tmp_path / "daemon.log"
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stdlib_exception_keeps_its_traceback_masked(json_log):
    def failing_callback():
        raise ValueError(f"transport broke with {KEY}")

    try:
        failing_callback()
    except ValueError:
        logging.getLogger("asyncio").error("Exception in callback Handle._run()", exc_info=True)

    (line,) = _lines(json_log)
    assert line["event"] == "Exception in callback Handle._run()"
    assert line["level"] == "error"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "failing_callback" in line["exception"]
    assert "ValueError: transport broke with" in line["exception"]
    assert CANARY not in json_log.read_text()


def test_stdlib_record_without_exception_has_no_exception_key(json_log):
    logging.getLogger("httpx").warning("retrying")
    (line,) = _lines(json_log)
    assert line["event"] == "retrying"
    assert "exception" not in line
