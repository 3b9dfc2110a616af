"""The gateway's logs: one JSON object per line (``log_format: json``, the default) or the
same for a human (``text``), every line of an order's story carrying its request id, account
and order id, and no secret on any line.

The request id, account and order id are context variables: set where they become known
(the request's first step, its authentication, the order's creation), they reach every line
logged later in that request, in any module, with nothing passed along. A line may also name
them itself (``extra={"account": ..., "order_id": ...}``), as the applier does per report.

Secrets are redacted from every line, whoever logs it: API keys, bearer tokens, and the
password of any URL (a Redis or database URL in an error, say).
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
ACCOUNT: ContextVar[str | None] = ContextVar("account", default=None)
ORDER_ID: ContextVar[str | None] = ContextVar("order_id", default=None)
CLIENT_ORDER_ID: ContextVar[str | None] = ContextVar("client_order_id", default=None)
CONTEXT = (
    ("request_id", REQUEST_ID),
    ("account", ACCOUNT),
    ("order_id", ORDER_ID),
    ("client_order_id", CLIENT_ORDER_ID),
)

REQUEST_ID_HEADER = "x-request-id"
# A request id the client sends is kept if it looks like one; else one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_SECRETS = (
    (re.compile(r"og_[A-Za-z0-9_-]{8,}"), "og_***"),  # an API key
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),  # a URL's password
    (
        re.compile(r"(?i)((?:password|passwd|requirepass)[\"']?\s*[=:]\s*[\"']?)[^\s\"',&]+"),
        r"\1***",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def request_id_from(header: bytes | str | None) -> str:
    """The request's id: the client's ``X-Request-ID`` if well formed, else a new one."""
    if header is not None:
        value = header.decode("latin-1") if isinstance(header, bytes) else header
        if _REQUEST_ID.fullmatch(value):
            return value
    return os.urandom(8).hex()


# The attributes every LogRecord has: anything else on a record came from ``extra``.
# uvicorn's color_message repeats the message with terminal colours.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": redact(record.getMessage()),
        }
        document.update(_context(record))
        if record.exc_info:
            document["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{at} {record.levelname} {record.name}: {redact(record.getMessage())}"
        if context:
            line += f" [{context}]"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The request, account and order of the line: given with it, else the context's."""
    found: dict[str, Any] = {}
    for name, var in CONTEXT:
        value = record.__dict__.get(name) or var.get()
        if value is not None:
            found[name] = value
    for name, value in record.__dict__.items():
        if name not in _RECORD_FIELDS and name not in found and not name.startswith("_"):
            found[name] = value
    return found


LogFormat = Literal["json", "text"]
FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for every logger of the process, uvicorn's included
    (uvicorn applies it in each worker it starts)."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "gateway",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": FORMATTERS[log_format]}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's own handlers would print its lines a second time, unformatted.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # A line per request of a client the gateway (or `ordergate status`) makes.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # A line per statement at debug: the order log's story is told by the gateway.
            "aiosqlite": {"level": "INFO"},
        },
    }


def configure_logging(log_format: LogFormat, level: str) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
