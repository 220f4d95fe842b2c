"""The daemons' log lines: the cheaper formatting writes exactly what logging's default did."""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest

from drc.logsetup import setup_logging


@pytest.fixture
def daemon_logging(monkeypatch: pytest.MonkeyPatch, daemon_logging_undone: None) -> io.StringIO:
    """setup_logging() into a string (undone after)."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    setup_logging("drcs", "info")
    return out


def test_a_line_reads_as_with_the_default_formatter(daemon_logging: io.StringIO):
    audit = logging.getLogger("drc.audit")
    audit.info("acquire credential=%d uid=%d", 7, 1001)
    audit.debug("not at info level")
    audit.warning("refused verb=%s", "Access")
    lines = daemon_logging.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert len(lines) == 2
    assert re.fullmatch(
        rf"{stamp} drcs\[{os.getpid()}\] INFO drc.audit: acquire credential=7 uid=1001", lines[0]
    )
    assert re.fullmatch(
        rf"{stamp} drcs\[{os.getpid()}\] WARNING drc.audit: refused verb=Access", lines[1]
    )
    reference = logging.Formatter("%(asctime)s")
    handler = logging.getLogger().handlers[0]
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.001):
        record = logging.makeLogRecord({"created": created, "msecs": (created % 1) * 1000})
        assert handler.formatter.formatTime(record) == reference.formatTime(record)
