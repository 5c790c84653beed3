"""The server's logging: AutoGen's reports of agent handlers that ended as turns are expected
to end (cancelled, refused by a budget, a failing model, and the members' echo of the group's
error) are not ERRORs with tracebacks; real handler failures still are."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from convergio_server.domain.errors import QuotaExceeded
from convergio_server.domain.models.errors import ModelError
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


def test_expected_ends_of_agent_handlers_are_not_logged_as_errors(collected: _Collect) -> None:
    autogen = logging.getLogger("autogen_core")
    expected = [
        asyncio.CancelledError(),
        QuotaExceeded("the daily budget is spent", reason="BUDGET_EXHAUSTED"),
        ModelError("the endpoint answered 500", kind="unavailable"),
        ValueError("Unhandled message in agent container: <class 'GroupChatError'>"),
    ]
    for exc in expected:
        autogen.error("Error processing publish message for amy", exc_info=_raised(exc))
    failed = _raised(ValueError("the tool broke"))
    autogen.error("Error processing publish message for amy", exc_info=failed)
    assert [r.exc_info[1] for r in collected.records if r.exc_info] == [failed]
    assert all(r.levelno == logging.ERROR for r in collected.records)
