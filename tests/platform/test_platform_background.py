"""Shutdown must not hang on a background task that swallows its cancellation, as redis-py's
pub/sub reader does when the cancel lands while its read timeout fires."""

from __future__ import annotations

import asyncio

import pytest
from convergio_server.domain.background import Backoff, cancel_and_wait, worth_logging


async def _swallows_first_cancel(stopped: list[str]) -> None:
    swallowed = False
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed:
                stopped.append("stopped")
                raise
            swallowed = True  # the library turned it into "no message yet"


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    stopped: list[str] = []
    task = asyncio.create_task(_swallows_first_cancel(stopped))
    await asyncio.sleep(0)
    await cancel_and_wait([task], limit_seconds=30)
    assert task.cancelled()
    assert stopped == ["stopped"]


async def test_a_task_that_never_stops_is_left_behind_after_the_limit() -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait([task], limit_seconds=0.5)
    assert not task.done()
    # Let the test end cleanly: the next cancel ends it.
    released.set()
    await cancel_and_wait([task])
    assert task.done()


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, failed])
    assert done.done() and failed.done()


async def test_a_backoff_waits_longer_each_time_and_gives_up_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    backoff = Backoff(3600)
    for _ in range(6):
        assert not backoff.exhausted()
        await backoff.wait()
    assert slept == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    # Logged the first time, then once in a while, not at every retry.
    assert [n for n in range(1, 70) if worth_logging(n)] == [1, 30, 60]
    # A deadline passed, or an earlier one given (a stopping process), ends the retries.
    assert Backoff(0).exhausted()
    assert Backoff(3600).exhausted(give_up_at=0.0)
