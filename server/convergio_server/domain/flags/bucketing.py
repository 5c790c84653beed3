"""flagd's fractional bucketing (shorthand form), so a caller lands in the bucket flagd
itself would choose.

hash = MurmurHash3 x86 32-bit, seed 0, unsigned, of the canonical CBOR encoding of the array
[flag key, targeting key]; bucket = (hash * total_weight) >> 32; the caller gets the first
entry whose cumulative weight exceeds the bucket. flagd's weights are integers of any total;
`bucket < w` holds exactly when `hash < w / total * 2**32`, so the result depends only on the
fractions and a total of 10,000 (percentages with 2 decimals) agrees with flagd for every
configuration with the same fractions (e.g. flagd's `[["on", 5], ["off", 95]]` and our 5%).
Because the "on" range is the first one, raising a percentage keeps everyone who was in.
"""

from __future__ import annotations

import mmh3

PERCENT_TOTAL = 10_000  # 100% with 2 decimals


def cbor_text(value: str) -> bytes:
    """Canonical CBOR of a text string (major type 3, shortest length form)."""
    raw = value.encode()
    n = len(raw)
    if n < 24:
        head = bytes((0x60 | n,))
    elif n < 0x100:
        head = bytes((0x78, n))
    elif n < 0x10000:
        head = b"\x79" + n.to_bytes(2, "big")
    elif n < 0x100000000:
        head = b"\x7a" + n.to_bytes(4, "big")
    else:
        head = b"\x7b" + n.to_bytes(8, "big")
    return head + raw


def key_prefix(flag_key: str) -> bytes:
    """CBOR of a 2-element array (0x82) followed by the flag key: the fixed part of every
    hash input of that flag."""
    return b"\x82" + cbor_text(flag_key)


def bucket_hash(prefix: bytes, targeting_key: str) -> int:
    return mmh3.hash(prefix + cbor_text(targeting_key), 0, False)


def bucket(hash_value: int, total_weight: int) -> int:
    return (hash_value * total_weight) >> 32


def percent_weight(percentage: float) -> int:
    """A percentage (2 decimals) as a weight out of PERCENT_TOTAL."""
    return max(0, min(PERCENT_TOTAL, round(percentage * 100)))


def pick(hash_value: int, weights: tuple[int, ...]) -> int:
    """Index of the entry the hash falls in, walking cumulative weights (flagd's order)."""
    b = bucket(hash_value, sum(weights))
    end = 0
    for index, weight in enumerate(weights):
        end += weight
        if b < end:
            return index
    return len(weights) - 1
