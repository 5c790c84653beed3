"""Opaque page tokens for keyset pagination.

A token encodes the sort key of the last item served and a fingerprint of the
filters, so a token reused with other filters is rejected instead of silently
skipping rows. Tokens are base64url JSON: opaque to clients, not secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from convergio_server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

T = TypeVar("T")

# Given a page, how many of its first items fit in one answer (the caller's message limit).
Fits = Callable[[Sequence[Any]], int]


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is clamped (validation rejects negatives)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def keep_fitting(rows: list[T], fits: Fits | None) -> tuple[list[T], bool]:
    """The first rows that fit in one answer (at least one: a single item always goes), and
    whether any were left out for the next page."""
    if fits is None or not rows:
        return rows, False
    kept = max(1, fits(rows))
    return rows[:kept], kept < len(rows)


def _fingerprint(filters: Any) -> str:
    raw = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the sort key of the last item of this page."""

    after: Sequence[Any]


def encode_token(after: Sequence[Any], filters: Any = None) -> str:
    payload = {"a": list(after), "f": _fingerprint(filters)}
    raw = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: Any = None) -> Cursor | None:
    """None for the first page; InvalidArgument (field `page_token`) for a bad token."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        after = payload["a"]
        fingerprint = payload["f"]
        if not isinstance(after, list):
            raise ValueError("bad cursor")
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.for_field(
            "page_token", "is not a token this list returned; start again without it"
        ) from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument.for_field(
            "page_token", "was issued for other filters; repeat the request that returned it"
        )
    return Cursor(after)
