"""Secrets in logs: a scanner the test session runs over every service's log lines.

The promise (issue #16) is that no log line of a full test run holds a CPR
number or a bearer token. The scanner sees the raw records of in-process apps
(message, extras and exception, before any redaction, so code that tries to
log a secret is caught even though ``orgdir.logs`` would mask it) and the log
files of service processes (``ServiceProcess`` writes them to
``ORGDIR_TEST_LOG_DIR``); ``orgdir_tools.testing`` reports what it found at the
end of the session and fails the run.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from pathlib import Path

from orgdir.logs import BEARER, CPR_LIKE, is_cpr_like
from orgdir.settings import DEV_STATIC_TOKENS

KNOWN_TOKENS = tuple(t.token for t in DEV_STATIC_TOKENS.values())


def find_leaks(text: str, secrets: Iterable[str] = KNOWN_TOKENS) -> list[str]:
    """What in ``text`` looks like a CPR number, a bearer token or one of ``secrets``."""
    found = [f"CPR-like {m.group(0)!r}" for m in CPR_LIKE.finditer(text) if is_cpr_like(m)]
    found += [f"bearer token {m.group(0)[:16]!r}…" for m in BEARER.finditer(text)]
    found += [f"token {s[:6]!r}…" for s in secrets if s and re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text)]
    return found


def record_text(record: logging.LogRecord) -> str:
    """Everything a formatter could write of ``record``: message, extras, exception."""
    parts = [record.getMessage()]
    parts += [f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return " ".join(parts)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
CLIENT_LOGGERS = ("httpx", "httpcore")  # the tests' own HTTP client logs the URLs it calls


class LogScanner(logging.Handler):
    """A root handler that survives ``orgdir.logs.configure`` and remembers every leak it sees."""

    keep_on_configure = True

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return
        try:
            found = find_leaks(record_text(record))
        except Exception:  # a record that cannot render is not a leak
            return
        self.leaks += [f"{record.name}: {what}: {record.getMessage()[:160]!r}" for what in found]


def scan_files(directory: Path) -> list[str]:
    """Leaks in the service processes' log files."""
    leaks: list[str] = []
    for path in sorted(directory.glob("*.log")):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            leaks += [f"{path.name}:{n}: {what}" for what in find_leaks(line)]
    return leaks
