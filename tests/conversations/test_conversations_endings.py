"""The gate of turn ends: while turns stream, only a few ends run at once (in order of
arrival), so that tokens never wait behind a burst of ends; with nothing streaming, or for
a cancelled turn, ends do not wait."""

from __future__ import annotations

import asyncio

from convergio_server.domain.conversations.endings import EndingGate


async def _hold(gate: EndingGate, name: str, log: list[str], release: asyncio.Event) -> None:
    async with gate.slot():
        log.append(name)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_while_a_turn_streams_ends_beyond_the_limit_wait_in_order() -> None:
    gate = EndingGate(2)
    gate.started_streaming()
    log: list[str] = []
    releases = {name: asyncio.Event() for name in "abcd"}
    tasks = [asyncio.create_task(_hold(gate, n, log, releases[n])) for n in "abcd"]
    await _settle()
    assert log == ["a", "b"]
    releases["b"].set()
    await _settle()
    assert log == ["a", "b", "c"]
    releases["a"].set()
    await _settle()
    assert log == ["a", "b", "c", "d"]
    for event in releases.values():
        event.set()
    await asyncio.gather(*tasks)
    assert gate.ending == 0


async def test_with_nothing_streaming_ends_do_not_wait() -> None:
    gate = EndingGate(1)
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, n, log, release)) for n in "abc"]
    await _settle()
    assert log == ["a", "b", "c"]
    release.set()
    await asyncio.gather(*tasks)


async def test_waiting_ends_go_when_the_last_stream_stops() -> None:
    gate = EndingGate(1)
    gate.started_streaming()
    gate.started_streaming()
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, n, log, release)) for n in "abc"]
    await _settle()
    assert log == ["a"]
    gate.stopped_streaming()  # one turn still streams
    await _settle()
    assert log == ["a"]
    gate.stopped_streaming()
    await _settle()
    assert log == ["a", "b", "c"]
    release.set()
    await asyncio.gather(*tasks)


async def test_an_urgent_end_never_waits() -> None:
    gate = EndingGate(1)
    gate.started_streaming()
    log: list[str] = []
    release = asyncio.Event()
    first = asyncio.create_task(_hold(gate, "a", log, release))
    await _settle()
    async with gate.slot(urgent=True):
        log.append("cancelled turn")
    assert log == ["a", "cancelled turn"]
    release.set()
    await first


async def test_a_waiter_that_leaves_gives_its_place_to_the_next() -> None:
    gate = EndingGate(1)
    gate.started_streaming()
    log: list[str] = []
    releases = {name: asyncio.Event() for name in "abc"}
    tasks = {n: asyncio.create_task(_hold(gate, n, log, releases[n])) for n in "abc"}
    await _settle()
    tasks["b"].cancel()  # while it waits
    await _settle()
    releases["a"].set()
    await _settle()
    assert log == ["a", "c"]
    releases["c"].set()
    await tasks["c"]
    assert gate.ending == 0


async def test_a_waiter_cancelled_as_it_is_let_in_passes_its_place_on() -> None:
    gate = EndingGate(1)
    gate.started_streaming()
    log: list[str] = []
    releases = {name: asyncio.Event() for name in "bc"}
    holding = gate.slot()
    await holding.__aenter__()
    tasks = {n: asyncio.create_task(_hold(gate, n, log, releases[n])) for n in "bc"}
    await _settle()
    await holding.__aexit__(None, None, None)  # lets "b" in, which has not run yet...
    tasks["b"].cancel()  # ...and is cancelled before it does
    await _settle()
    assert log == ["c"]
    releases["c"].set()
    await tasks["c"]
    assert gate.ending == 0


async def test_no_limit() -> None:
    gate = EndingGate(0)
    gate.started_streaming()
    log: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, n, log, release)) for n in "abcdef"]
    await _settle()
    assert log == list("abcdef")
    release.set()
    await asyncio.gather(*tasks)


async def _enter(gate: EndingGate, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with gate.slot():
        entered.set()
        await release.wait()


async def test_no_end_waits_longer_than_its_limit() -> None:
    # When the ends running now are slow (the stores answer slowly), the others go ahead
    # after `max_wait` instead of piling up behind them.
    gate = EndingGate(1, max_wait=0.05)
    gate.started_streaming()
    entered = {name: asyncio.Event() for name in "abc"}
    release = asyncio.Event()
    tasks = [asyncio.create_task(_enter(gate, entered[n], release)) for n in "abc"]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in entered.values())), timeout=30)
    assert gate.ending == 3
    release.set()
    await asyncio.gather(*tasks)
    assert gate.ending == 0
    # Then one at a time again.
    log: list[str] = []
    more = {name: asyncio.Event() for name in "de"}
    late = [asyncio.create_task(_hold(gate, n, log, more[n])) for n in "de"]
    await _settle()
    assert log == ["d"]
    more["d"].set()
    await _settle()
    assert log == ["d", "e"]
    more["e"].set()
    await asyncio.gather(*late)
