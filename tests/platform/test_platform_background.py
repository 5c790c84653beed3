"""Shutdown must not hang on a background task that swallows its cancellation, as redis-py's
pub/sub reader does when the cancel lands while its read timeout fires."""

from __future__ import annotations

import asyncio

from convergio_server.domain.background import cancel_and_wait


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
