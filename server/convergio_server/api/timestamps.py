"""Timestamps of requests as datetimes, or INVALID_ARGUMENT naming the field: protobuf's
conversion raises a plain ValueError (an INTERNAL error) for seconds outside years 1-9999
or nanos outside 0-999,999,999."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from convergio_server.domain.errors import InvalidArgument


def timestamp_field(request: Message, field: str, name: str = "") -> datetime | None:
    """`request.<field>` in UTC; None when it is not set. `name` is the field's name in
    errors (default `field`)."""
    if not request.HasField(field):
        return None
    try:
        return getattr(request, field).ToDatetime(UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgument.for_field(
            name or field,
            "is not a valid time: seconds must fall in years 1 to 9999 (UTC) and nanos in "
            "0 to 999,999,999",
        ) from None
