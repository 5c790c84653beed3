"""A conversation's event log: Redis streams for the live window (fan-out across server
processes, fast resume), PostgreSQL for what must last (every event but token deltas).

Sequence numbers come from Redis, allocated and appended in one atomic step, so the live
stream is always in sequence order whoever appends (the turn runner, a queued turn's
SendMessage, a reaper). When the counter is missing (Redis lost it, or the conversation was
idle longer than its expiry) it is seeded from the highest sequence PostgreSQL holds.

Readers replay from PostgreSQL what the live window no longer holds, then from Redis, then
follow live events. One reader task per conversation per process fans live events out to
that process's subscribers; a subscriber fills any gap it sees from the log, and skips what
it already delivered, so a reader gets no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from convergio_server.domain.background import Backoff, cancel_and_wait, worth_logging
from convergio_server.domain.errors import NotFound, Unavailable
from convergio_server.domain.events.model import Event, EventBody, decode, encode

log = logging.getLogger(__name__)

_PAGE = 1000
# How long appended events whose durable write failed (PostgreSQL down) are retried.
DURABLE_RETRY_SECONDS = 120.0
# ...and once the process is stopping.
CLOSING_RETRY_SECONDS = 5.0
_LOCAL_POLL_SECONDS = 1.0
# How long a subscription made for a turn about to start here waits for it before it reads
# Redis instead (the turn was queued, or runs elsewhere).
_LOCAL_START_SECONDS = 0.5
# How long the reader of a conversation whose local turn just ended waits for its SendMessage
# streams to close before it reads Redis (a catch-up, then a blocking read on a connection
# of its own: costly for 200 turns ending at once, and useless for readers that are leaving).
_TURN_END_GRACE_SECONDS = 0.25


class LiveEvents(Protocol):
    """The live window of event logs (Redis streams)."""

    async def append(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        payloads: Sequence[bytes],
        seed: int | None,
        ordinals: Sequence[int] | None = None,
    ) -> list[int | None]:
        """Allocate the next sequences and append, in order; None for each event when the
        counter is missing and no seed was given (the caller then seeds it from the durable
        log). With `ordinals` (each event's number within its turn, growing), an event
        appended before by a call whose answer was lost is not appended again: its sequence
        is answered, or 0 when it is no longer in the live window."""
        ...

    async def start(self, tenant_id: str, conversation_id: str) -> None:
        """Set the counter of a new conversation (no events yet) to zero, so that its first
        append needs no seed."""
        ...

    async def range(
        self, tenant_id: str, conversation_id: str, after: int, upto: int | None, count: int
    ) -> list[tuple[int, bytes]]:
        """Entries with after < sequence <= upto (None = no upper bound), oldest first."""
        ...

    async def last_sequence(self, tenant_id: str, conversation_id: str) -> int | None:
        """The latest allocated sequence, or None when the counter is missing."""
        ...

    async def turn_last_sequences(
        self, tenant_id: str, conversation_id: str, turn_ids: Sequence[str]
    ) -> list[int | None]:
        """The latest sequence of each turn's events, while the live window remembers it
        (None where it does not), in one round trip."""
        ...

    async def wait_after(
        self, tenant_id: str, conversation_id: str, after: int, block_ms: int
    ) -> list[tuple[int, bytes]]:
        """Entries after `after`, blocking up to `block_ms` for the first one."""
        ...

    async def delete(self, tenant_id: str, conversation_id: str) -> None: ...


class DurableEvents(Protocol):
    """The durable part of event logs (PostgreSQL)."""

    async def insert(self, tenant_id: str, event: Event) -> None: ...

    async def insert_many(self, rows: list[tuple[str, Event]]) -> None:
        """Raises NotFound when the events' conversation no longer exists, Unavailable when
        PostgreSQL cannot be reached (worth retrying: rows written already are skipped)."""
        ...

    async def range(
        self, tenant_id: str, conversation_id: str, after: int, before: int | None, limit: int
    ) -> list[Event]:
        """Events with after < sequence < before (None = no bound), oldest first."""
        ...

    async def max_sequence(self, tenant_id: str, conversation_id: str) -> int: ...


HEARTBEAT = None  # what `EventLog.read` yields on an idle stream when asked for heartbeats
_IDLE: list[Event] = []  # queued to a reader when its stream has been quiet for a while


class _Inbox(asyncio.Queue[list[Event]]):
    """A subscriber's queue, which counts the events handed to it that its reader has not
    yet taken past (the one it is writing to its client included)."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self.channel = channel
        self.pending = 0

    def deliver(self, events: list[Event]) -> None:
        self.put_nowait(events)
        before = self.pending
        self.pending += len(events)
        if before < _BEHIND <= self.pending:
            self.channel.behind += 1

    def taken(self) -> None:
        self.pending -= 1
        if self.pending == _BEHIND - 1:
            self.channel.reader_caught_up()

    def drop(self) -> None:
        """The reader left."""
        if self.pending >= _BEHIND:
            self.channel.reader_caught_up()
        self.pending = 0


# A reader with this many events not taken has one waiting behind the one it is writing.
_BEHIND = 2


@dataclass
class _Channel:
    """Live events of one conversation for this process's subscribers."""

    subscribers: set[_Inbox] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # Set once the reader knows where it starts: a subscriber replays only after that, so
    # the replay and the live events overlap instead of leaving a hole between them.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # The highest sequence handed to subscribers straight from a local append.
    published: int = 0
    # A turn of the conversation is about to start in this process: its events will be
    # published locally, no need for a blocking read of Redis meanwhile.
    expect_local: bool = False
    # Subscribers that leave at the end of a turn (SendMessage streams).
    turn_bound: int = 0
    # Subscribers with events waiting behind the one they are writing, and who waits for
    # there to be none.
    behind: int = 0
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def reader_caught_up(self) -> None:
        self.behind -= 1
        if not self.behind and self.waiters:
            waiters, self.waiters = self.waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class Subscription:
    """A reader's place among a conversation's live events in this process, from the moment
    it was made: taken before a turn's first event is appended, it needs no replay."""

    def __init__(
        self,
        log: EventLog,
        key: tuple[str, str],
        queue: _Inbox,
        channel: _Channel,
        turn_bound: bool = False,
    ) -> None:
        self._log = log
        self.key = key
        self.queue = queue
        self.channel = channel
        self._open = True
        self._turn_bound = turn_bound
        if turn_bound:
            channel.turn_bound += 1

    def elsewhere(self) -> None:
        """The turn a `local_turn` subscription expected will not start here now: follow
        the conversation in Redis at once."""
        self.channel.expect_local = False
        self._log._stop_waiting_for_writer(self.key)

    def close(self) -> None:
        if self._open:
            self._open = False
            if self._turn_bound:
                self.channel.turn_bound -= 1
            self._log._unsubscribe(*self.key, self.queue)


class _DurableWriter:
    """Writes durable events to PostgreSQL in the background, in order, in batches, so that
    an append costs one Redis round trip. A TurnCompleted append waits for its write (and so
    for every event before it)."""

    def __init__(self, durable: DurableEvents, batch: int = 500) -> None:
        self.durable = durable
        self.batch = batch
        self.queue: asyncio.Queue[tuple[str, Event, asyncio.Future[None]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.give_up_at = math.inf

    def put(self, tenant_id: str, event: Event) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((tenant_id, event, done))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="durable-events")
        return done

    async def _run(self) -> None:
        while not self.queue.empty():
            items = [self.queue.get_nowait()]
            while len(items) < self.batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            await self._write(items)

    async def _write(self, items: list[tuple[str, Event, asyncio.Future[None]]]) -> None:
        """Write a batch; while PostgreSQL fails, retried (a row written already is skipped)
        up to DURABLE_RETRY_SECONDS, or until shortly after `close`: the events are in Redis
        already, and must not be appended again (that would log them twice)."""
        rows = [(tenant, event) for tenant, event, _ in items]
        backoff = Backoff(DURABLE_RETRY_SECONDS)
        while True:
            try:
                await self.durable.insert_many(rows)
                break
            except Unavailable as exc:
                if backoff.exhausted(self.give_up_at):
                    log.error(
                        "%d events (%s...) could not be stored in PostgreSQL: %s",
                        len(rows), _first_of(rows), exc,
                    )  # fmt: skip
                    for _, _, done in items:
                        if not done.done():
                            done.set_exception(exc)
                            done.exception()  # retrieved: the waiter, if any, re-raises
                    return
                if backoff.worth_logging:
                    log.warning("events not stored yet, retrying: %s", exc)
                await backoff.wait()
            except Exception:
                # A row PostgreSQL refuses (its conversation was just deleted, say): the
                # others are kept, one by one.
                for item in items:
                    await self._write_one(*item)
                return
        for _, _, done in items:
            if not done.done():
                done.set_result(None)

    async def _write_one(self, tenant_id: str, event: Event, done: asyncio.Future[None]) -> None:
        try:
            await self.durable.insert_many([(tenant_id, event)])
        except NotFound:
            # Its conversation was deleted (a turn ending while it was): nothing to keep.
            log.info("event %d of deleted %s dropped", event.sequence, event.conversation_id)
        except Exception as exc:
            log.warning(
                "could not store event %d of %s: %s", event.sequence, event.conversation_id, exc
            )
            if not done.done():
                done.set_exception(exc)
                done.exception()  # retrieved: the waiter, if any, re-raises
            return
        if not done.done():
            done.set_result(None)

    async def close(self) -> None:
        # Stopping: what PostgreSQL still refuses is retried a little longer, not minutes.
        self.give_up_at = time.monotonic() + CLOSING_RETRY_SECONDS
        while self.task is not None and not self.task.done():
            await asyncio.wait({self.task})
            if not self.queue.empty():
                self.task = asyncio.create_task(self._run(), name="durable-events")


class EventLog:
    def __init__(self, live: LiveEvents, durable: DurableEvents, *, block_ms: int = 5000) -> None:
        self.live = live
        self.durable = durable
        self.block_ms = block_ms
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._closed = False
        self._writer = _DurableWriter(durable)
        # Conversations with a turn running in this process, and the events that wake
        # their readers when it ends.
        self._writers: dict[tuple[str, str], int] = {}
        self._writer_done: dict[tuple[str, str], asyncio.Event] = {}
        # The latest sequence this process appended, per conversation it is writing.
        self._appended: dict[tuple[str, str], int] = {}
        # Set when a turn starts writing the conversation here (see `subscribe`).
        self._writer_starting: dict[tuple[str, str], asyncio.Event] = {}

    @contextlib.contextmanager
    def writing(self, tenant_id: str, conversation_id: str) -> Iterator[None]:
        """While a turn of the conversation runs in this process, its events go straight
        to this process's subscribers, and the live reader only polls for events appended
        elsewhere (about once a second) instead of waking up for every event."""
        key = (tenant_id, conversation_id)
        self._writers[key] = self._writers.get(key, 0) + 1
        done = self._writer_done.setdefault(key, asyncio.Event())
        done.clear()
        self._stop_waiting_for_writer(key)
        try:
            yield
        finally:
            self._writers[key] -= 1
            if not self._writers[key]:
                del self._writers[key]
                self._writer_done.pop(key, None)
                self._appended.pop(key, None)
                done.set()

    def _stop_waiting_for_writer(self, key: tuple[str, str]) -> None:
        """Wake the live reader waiting for a local turn (it started, or will not)."""
        starting = self._writer_starting.pop(key, None)
        if starting is not None:
            starting.set()

    async def append(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        body: EventBody,
        event_time: datetime | None = None,
    ) -> Event:
        (event,) = await self.append_many(tenant_id, conversation_id, turn_id, [(body, event_time)])
        return event

    async def append_many(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        items: list[tuple[EventBody, datetime | None]],
        ordinals: Sequence[int] | None = None,
        *,
        gap_if_lost: int = 0,
    ) -> list[Event]:
        """Append events of one turn in this order: one Redis round trip for all of them
        (shared with the appends of other conversations made meanwhile), then one hand-over
        to this process's subscribers. With `ordinals` (see `LiveEvents.append`), a retry
        after a failure whose outcome is unknown (a timeout) appends nothing twice. With
        `gap_if_lost`, a counter Redis lost resumes that far past the durable log: for the
        end of a turn another process ran, whose token deltas (never durable) had numbers
        a client may have seen."""
        stamped = [(body, event_time or datetime.now(UTC)) for body, event_time in items]
        payloads = [encode(conversation_id, turn_id, 0, now, body) for body, now in stamped]
        sequences = await self.live.append(
            tenant_id, conversation_id, turn_id, payloads, None, ordinals
        )
        missing = [i for i, sequence in enumerate(sequences) if sequence is None]
        if missing:
            # The counter is missing (Redis lost it, or it expired): seed it from the durable
            # log, or from what this process appended last if that is higher (token deltas
            # are not durable, and their numbers must not be handed out twice).
            seed = max(
                await self.durable.max_sequence(tenant_id, conversation_id) + gap_if_lost,
                self._appended.get((tenant_id, conversation_id), 0),
            )
            again = [payloads[i] for i in missing]
            numbers = None if ordinals is None else [ordinals[i] for i in missing]
            for i, sequence in zip(
                missing,
                await self.live.append(tenant_id, conversation_id, turn_id, again, seed, numbers),
                strict=True,
            ):
                sequences[i] = sequence
        events = sorted(
            (
                Event(conversation_id, turn_id, sequence, now, body)
                for sequence, (body, now) in zip(sequences, stamped, strict=True)
                if sequence  # (0: appended before, out of the window: gone)
            ),
            key=lambda event: event.sequence,
        )
        if not events:
            return events
        key = (tenant_id, conversation_id)
        if key in self._writers:
            self._appended[key] = max(self._appended.get(key, 0), events[-1].sequence)
        channel = self._channels.get(key)
        if channel is not None and not channel.ready.is_set():
            channel = None
        if channel is not None:
            # Delivered below, not by the channel's reader from Redis.
            channel.published = max(channel.published, events[-1].sequence)
        try:
            terminal: asyncio.Future[None] | None = None
            for event in events:
                if event.body.DURABLE:
                    written = self._writer.put(tenant_id, event)
                    if event.terminal:
                        terminal = written
            if terminal is not None:
                # Before this process's subscribers see the turn end, so that a client
                # holding its TurnCompleted can replay the whole turn from PostgreSQL.
                await self._stored(terminal)
        finally:
            if channel is not None:
                for queue in channel.subscribers:
                    queue.deliver(events)
        return events

    async def _stored(self, written: asyncio.Future[None]) -> None:
        """Wait for the durable write of appended events (the writer retries it while
        PostgreSQL fails; what it gave up on, it logged)."""
        with contextlib.suppress(Exception):
            await written

    def wake_readers(self) -> None:
        """Have every live reader of this process look up from its wait (it yields a
        heartbeat), e.g. to notice that the server is stopping."""
        for channel in self._channels.values():
            for queue in channel.subscribers:
                queue.put_nowait(_IDLE)

    def readers_behind(self, tenant_id: str, conversation_id: str) -> bool:
        """Whether a reader of the conversation in this process has events waiting behind
        the one it is writing to its client."""
        channel = self._channels.get((tenant_id, conversation_id))
        return channel is not None and channel.behind > 0

    def when_caught_up(
        self, tenant_id: str, conversation_id: str, waiter: asyncio.Future[None]
    ) -> Callable[[], None]:
        """Complete `waiter` once no reader of the conversation in this process is behind
        (at once if none is). Returns what forgets it (a waiter that stopped waiting)."""
        channel = self._channels.get((tenant_id, conversation_id))
        if channel is None or not channel.behind:
            if not waiter.done():
                waiter.set_result(None)
            return _nothing
        channel.waiters.add(waiter)
        return lambda: channel.waiters.discard(waiter)

    async def start(self, tenant_id: str, conversation_id: str) -> None:
        """A new conversation's log: its first event then takes one round trip instead of
        three (a missing counter is seeded from PostgreSQL)."""
        await self.live.start(tenant_id, conversation_id)

    async def last_sequence(self, tenant_id: str, conversation_id: str) -> int:
        """The conversation's latest sequence; while Redis is unreachable, the latest one
        PostgreSQL has (token deltas are not there: it may lag behind)."""
        try:
            found = await self.live.last_sequence(tenant_id, conversation_id)
        except Unavailable:
            found = None
        if found is not None:
            return found
        return await self.durable.max_sequence(tenant_id, conversation_id)

    async def replay(
        self, tenant_id: str, conversation_id: str, after: int, upto: int | None = None
    ) -> AsyncIterator[Event]:
        """The logged events with after < sequence <= upto, oldest first: from PostgreSQL
        what the live window no longer holds, then from Redis."""
        cursor = after
        page = await self.live.range(tenant_id, conversation_id, cursor, upto, _PAGE)
        first_live = page[0][0] if page else None
        if first_live is None or first_live > cursor + 1:
            before = first_live if first_live is not None else (None if upto is None else upto + 1)
            while True:
                rows = await self.durable.range(tenant_id, conversation_id, cursor, before, _PAGE)
                for event in rows:
                    cursor = event.sequence
                    yield event
                if len(rows) < _PAGE:
                    break
        while page:
            for sequence, raw in page:
                if sequence <= cursor:
                    continue
                cursor = sequence
                yield _with_sequence(raw, sequence)
            if len(page) < _PAGE or (upto is not None and cursor >= upto):
                break
            page = await self.live.range(tenant_id, conversation_id, cursor, upto, _PAGE)

    def subscribe(
        self, tenant_id: str, conversation_id: str, *, local_turn: bool = False
    ) -> Subscription:
        """Start receiving the conversation's live events (see `read`). Close it when done.
        `local_turn`: a turn is about to start in this process (SendMessage), so the
        events will be published here; Redis is read only if it does not start soon."""
        queue, channel = self._subscribe(tenant_id, conversation_id)
        if local_turn:
            channel.expect_local = True
        return Subscription(
            self, (tenant_id, conversation_id), queue, channel, turn_bound=local_turn
        )

    async def read(
        self,
        tenant_id: str,
        conversation_id: str,
        after: int,
        *,
        follow: bool = True,
        heartbeat_seconds: float | None = None,
        subscription: Subscription | None = None,
    ) -> AsyncIterator[Event | None]:
        """Events after `after`: replay, then (with `follow`) live ones, with no gap and no
        duplicate. Yields None after `heartbeat_seconds` without an event.

        `subscription`, taken before the event after `after` was appended: no replay, the
        live events start there (a gap, should one show, is still filled from the log).
        Closed here when the read ends."""
        if not follow:
            async for event in self.replay(tenant_id, conversation_id, after):
                yield event
            return
        replay = subscription is None
        if subscription is None:
            subscription = self.subscribe(tenant_id, conversation_id)
        queue = subscription.queue
        # One timer per quiet period, not a timeout per batch: it puts _IDLE in the queue
        # once nothing came for heartbeat_seconds.
        loop = asyncio.get_running_loop()
        last = loop.time()
        timer: asyncio.TimerHandle | None = None

        def check_idle() -> None:
            nonlocal timer
            assert heartbeat_seconds is not None
            quiet = loop.time() - last
            if quiet >= heartbeat_seconds:
                queue.put_nowait(_IDLE)
                quiet = 0.0
            timer = loop.call_later(heartbeat_seconds - quiet, check_idle)

        try:
            cursor = after
            if replay:
                await subscription.channel.ready.wait()
                async for event in self.replay(tenant_id, conversation_id, cursor):
                    cursor = event.sequence
                    yield event
            last = loop.time()
            if heartbeat_seconds is not None:
                timer = loop.call_later(heartbeat_seconds, check_idle)
            while True:
                batch = await queue.get()
                if batch is _IDLE:
                    yield HEARTBEAT
                    continue
                last = loop.time()
                for event in batch:
                    if event.sequence <= cursor:
                        queue.taken()
                        continue
                    if event.sequence > cursor + 1:
                        # Published before this subscriber's replay caught up: fill the gap.
                        async for missed in self.replay(
                            tenant_id, conversation_id, cursor, event.sequence - 1
                        ):
                            cursor = missed.sequence
                            yield missed
                    cursor = event.sequence
                    yield event
                    queue.taken()
        finally:
            if timer is not None:
                timer.cancel()
            subscription.close()

    def _subscribe(self, tenant_id: str, conversation_id: str) -> tuple[_Inbox, _Channel]:
        key = (tenant_id, conversation_id)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel()
        queue = _Inbox(channel)
        channel.subscribers.add(queue)
        if channel.task is None or channel.task.done():
            channel.ready.clear()
            # A context of its own: it serves every reader, not the request that started it.
            channel.task = asyncio.create_task(
                self._pump(key, channel),
                name=f"events:{conversation_id}",
                context=contextvars.Context(),
            )
        return queue, channel

    def _unsubscribe(self, tenant_id: str, conversation_id: str, queue: _Inbox) -> None:
        key = (tenant_id, conversation_id)
        channel = self._channels.get(key)
        if channel is None:
            return
        if queue in channel.subscribers:
            channel.subscribers.discard(queue)
            queue.drop()
        if not channel.subscribers:
            self._channels.pop(key, None)
            if channel.task is not None:
                channel.task.cancel()

    async def _pump(self, key: tuple[str, str], channel: _Channel) -> None:
        tenant_id, conversation_id = key
        last: int | None = None
        failures = 0
        writer_seen: asyncio.Event | None = None  # of the local turn being followed
        while channel.subscribers and not self._closed:
            try:
                if last is None:
                    # A conversation this process is writing: where its log ends is known
                    # here, no need to ask Redis (what others append is polled below).
                    last = self._appended.get(key)
                    if last is None:
                        last = await self.last_sequence(tenant_id, conversation_id)
                    channel.ready.set()
                done = self._writer_done.get(key)
                if done is None and channel.expect_local:
                    channel.expect_local = False
                    starting = self._writer_starting.setdefault(key, asyncio.Event())
                    try:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(_LOCAL_START_SECONDS):
                                await starting.wait()
                    finally:
                        if self._writer_starting.get(key) is starting:
                            del self._writer_starting[key]
                    continue
                if done is None and writer_seen is not None:
                    # The local turn ended since the last look: its end is handled below.
                    done = writer_seen
                if done is not None:
                    # A local turn publishes its events directly: catch up on events
                    # appended by other processes now and then, or when the turn ends.
                    writer_seen = done
                    channel.expect_local = False  # it started before this reader looked
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_LOCAL_POLL_SECONDS):
                            await done.wait()
                    if done.is_set():
                        writer_seen = None
                        if channel.turn_bound >= len(channel.subscribers):
                            # Its only readers are SendMessage streams about to close (which
                            # cancels this task): Redis is read only if they stay.
                            await asyncio.sleep(_TURN_END_GRACE_SECONDS)
                    # Only what came after the local events: an event of another process
                    # numbered between two local ones is filled in by the subscribers,
                    # who see the gap it leaves.
                    last = max(last, channel.published)
                    entries = await self.live.range(tenant_id, conversation_id, last, None, _PAGE)
                else:
                    entries = await self.live.wait_after(
                        tenant_id, conversation_id, last, self.block_ms
                    )
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: retry; subscribers fill gaps later
                failures += 1
                if worth_logging(failures):
                    log.warning(
                        "event follower of %s: %s (failure %d)", conversation_id, exc, failures
                    )
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            if not entries:
                continue
            last = entries[-1][0]
            # Events already published locally are not decoded again.
            batch = [
                _with_sequence(raw, sequence)
                for sequence, raw in entries
                if sequence > channel.published
            ]
            if batch:
                for queue in channel.subscribers:
                    queue.deliver(batch)

    async def close(self) -> None:
        await self._writer.close()
        self._closed = True
        tasks = [c.task for c in self._channels.values() if c.task is not None]
        self._channels.clear()
        await cancel_and_wait(tasks)


def _nothing() -> None:
    pass


def _first_of(rows: list[tuple[str, Event]]) -> str:
    event = rows[0][1]
    return f"{event.conversation_id} #{event.sequence}"


def _with_sequence(raw: bytes, sequence: int) -> Event:
    event = decode(raw)
    return Event(event.conversation_id, event.turn_id, sequence, event.event_time, event.body)
