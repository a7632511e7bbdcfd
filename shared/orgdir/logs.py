"""Structured JSON logs carrying the correlation id, with CPR numbers and bearer tokens masked.

Code must never log a secret (the test session scans every record, see
``orgdir_tools.logscan``); the masking here is the safety net for what a
library might print, such as a URL with a CPR number in its query.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, date, datetime
from typing import Any

from orgdir import context

# Ten digits, optionally ``ddmmyy-ssss``, not part of a longer word or number.
CPR_LIKE = re.compile(r"(?<!\w)(?<!\d\.)(\d{2})(\d{2})(\d{2})-?(\d{4})(?!\w|\.\d)")
# ``Bearer`` and a credential (it has a digit or punctuation, so prose such as "Bearer tokens" is not one).
BEARER = re.compile(r"Bearer\s+(?=[\w~+/=.-]*[\d._~+/=-])[\w~+/=.-]{6,}")


def is_cpr_like(m: re.Match[str]) -> bool:
    """A real day and month: timestamps and counts rarely are one, so masking leaves them alone."""
    try:
        date(2000 + int(m.group(3)), int(m.group(2)), int(m.group(1)))
    except ValueError:
        return False
    return True


def redact(text: str) -> str:
    text = CPR_LIKE.sub(lambda m: "[cpr]" if is_cpr_like(m) else m.group(0), text)
    return BEARER.sub("Bearer [redacted]", text)


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if cid := context.correlation_id.get():
            out["correlation_id"] = cid
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    # A handler that asks to stay (the test session's log scanner) survives reconfiguration.
    root.handlers[:] = [h for h in root.handlers if getattr(h, "keep_on_configure", False)] + [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
