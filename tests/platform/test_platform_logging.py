"""The server's logging: AutoGen's report of a cancelled agent handler (every cancelled or
stopped turn) is not an ERROR with a traceback; real handler failures still are."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from convergio_server.logs import configure_logging


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[_Collect]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    autogen = logging.getLogger("autogen_core")
    saved_filters, saved_autogen_level = autogen.filters[:], autogen.level
    configure_logging("INFO")
    handler = _Collect()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.handlers[:], root.level = saved_handlers, saved_level
        autogen.filters[:], autogen.level = saved_filters, saved_autogen_level


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_cancelled_agent_handler_is_not_logged_as_an_error(collected: _Collect) -> None:
    autogen = logging.getLogger("autogen_core")
    cancelled = _raised(asyncio.CancelledError())
    autogen.error("Error processing publish message for amy", exc_info=cancelled)
    failed = _raised(ValueError("the tool broke"))
    autogen.error("Error processing publish message for amy", exc_info=failed)
    assert [r.exc_info[1] for r in collected.records if r.exc_info] == [failed]
    assert all(r.levelno == logging.ERROR for r in collected.records)
