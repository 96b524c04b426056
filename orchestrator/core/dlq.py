"""What a dead letter carries on the DLQ topic, and how its record is kept under a size limit.

A dead letter is stored whole in `dead_letters`; its DLQ record carries the same key, value and
original headers (`orig.<name>`) when they fit under the limit. When they do not:

* the value is cut to its first N bytes, and three headers say so: `x-dlq-truncated: true`,
  `x-dlq-original-size: <bytes of the whole value>`, `x-dlq-sha256: <hex digest of the whole
  value>` (a whole value carries none of the three);
* only if the key and the headers alone do not fit, original headers are left out from the last
  one back (`x-dlq-headers-dropped: <count>`), and a key that alone does not fit is cut
  (`x-dlq-key-truncated: true`).

A NULL value (a tombstone) stays NULL. The record also carries the input's `correlation_id`,
`causation_id` and `traceparent` (from its headers, else its envelope) when it had them.

Sizes are measured as librdkafka measures a record against the producer's `message.max.bytes`,
rounded up (`wire_size`), so a record that fits here is never refused as too large.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from orchestrator.core.inbound import CORRELATION_HEADERS, Headers, RawMessage

# librdkafka counts at most 36 bytes of framing per record (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD)
# and at most 10 per header (two varints): rounded up here.
RECORD_OVERHEAD = 64
HEADER_OVERHEAD = 12
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default `message.max.bytes`
# What the orchestrator adds around an input's data when it publishes a fact or a capability
# message from it (envelope fields, ids, the standard headers): the input cap must leave this.
PUBLISH_HEADROOM_BYTES = 16_384
# The smallest DLQ limit: always room for our own headers (reason and ids are bounded below).
MIN_DLQ_MAX_BYTES = 16_384
MAX_REASON_BYTES = 1024
MAX_CONTEXT_BYTES = 1024

TRUNCATED = "x-dlq-truncated"
ORIGINAL_SIZE = "x-dlq-original-size"
SHA256 = "x-dlq-sha256"
HEADERS_DROPPED = "x-dlq-headers-dropped"
KEY_TRUNCATED = "x-dlq-key-truncated"
CONTEXT_HEADERS = ("correlation_id", "causation_id", "traceparent")
ORIG_PREFIX = "orig."

HeaderList = list[tuple[str, bytes | None]]


def header_size(name: str, value: bytes | None) -> int:
    return HEADER_OVERHEAD + len(name.encode()) + (len(value) if value is not None else 0)


def wire_size(key: bytes | None, value: bytes | None, headers: Headers | HeaderList) -> int:
    """The bytes of one record as the producer counts them against `message.max.bytes`
    (rounded up): framing, key, value and every header."""
    return (
        RECORD_OVERHEAD
        + (len(key) if key is not None else 0)
        + (len(value) if value is not None else 0)
        + sum(header_size(name, v) for name, v in headers)
    )


def bounded_text(text: str, limit: int = MAX_REASON_BYTES) -> bytes:
    """`text` as UTF-8, cut to at most `limit` bytes on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[:limit].decode(errors="ignore").encode()


# -- the input's trace context ---------------------------------------------------------------


def _usable(value: Any) -> bytes | None:
    """A context value worth copying: non-empty text of bounded size (else None)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    data = value.encode()
    return data if len(data) <= MAX_CONTEXT_BYTES else None


def _envelope(value: bytes | None) -> list[dict[str, Any]]:
    """The places of an envelope that can hold context, most specific first: metadata, data,
    the body (empty when the value is no JSON object)."""
    if not value or value.lstrip()[:1] != b"{":
        return []
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(doc, dict):
        return []
    parts = [doc.get("metadata"), doc.get("data")]
    return [p for p in parts if isinstance(p, dict)] + [doc]


def context_headers(raw: RawMessage) -> HeaderList:
    """`correlation_id`, `causation_id` and `traceparent` of the input, when it had them: its
    headers first (as the ingester reads them), then its envelope."""
    given: dict[str, bytes] = {}
    for name, raw_value in raw.headers:
        usable = _usable(raw_value)
        if name not in given and usable is not None:
            given[name] = usable
    aliases = {"correlation_id": CORRELATION_HEADERS}
    found: HeaderList = []
    bodies: list[dict[str, Any]] | None = None
    for name in CONTEXT_HEADERS:
        value = next((given[a] for a in aliases.get(name, (name,)) if a in given), None)
        if value is None:
            if bodies is None:
                bodies = _envelope(raw.value)
            value = next((v for b in bodies if (v := _usable(b.get(name))) is not None), None)
        if value is not None:
            found.append((name, value))
    return found


# -- fitting a record under the limit --------------------------------------------------------


def fit_record(
    key: bytes | None,
    value: bytes | None,
    own: HeaderList,
    original: Headers,
    limit: int,
) -> tuple[bytes | None, bytes | None, HeaderList]:
    """(key, value, headers) of a DLQ record at most `limit` bytes (`wire_size`): `own`
    headers, then the `original` ones prefixed `orig.`, cut as the module docstring says."""
    orig: HeaderList = [(ORIG_PREFIX + name, v) for name, v in original]
    whole = [*own, *orig]
    if wire_size(key, value, whole) <= limit:
        return key, value, whole
    marks: HeaderList = []
    if value is not None:
        marks = [
            (TRUNCATED, b"true"),
            (ORIGINAL_SIZE, str(len(value)).encode()),
            (SHA256, hashlib.sha256(value).hexdigest().encode()),
        ]
    kept, dropped = _drop_headers(key, [*own, *marks], orig, limit)
    tail: HeaderList = [(HEADERS_DROPPED, str(dropped).encode())] if dropped else []
    if wire_size(key, None, [*own, *marks, *kept, *tail]) > limit and key is not None:
        tail.append((KEY_TRUNCATED, b"true"))
        key = key[: max(0, limit - wire_size(b"", None, [*own, *marks, *kept, *tail]))]
    plain = [*own, *kept, *tail]
    if value is None or wire_size(key, value, plain) <= limit:
        return key, value, plain  # headers had to go, the value did not
    headers = [*own, *marks, *kept, *tail]
    room = max(0, limit - wire_size(key, None, headers))
    return key, value[:room], headers


def _drop_headers(
    key: bytes | None, base: HeaderList, orig: HeaderList, limit: int
) -> tuple[HeaderList, int]:
    """The longest prefix of `orig` that fits with `key` and `base` (no value), and how many
    headers were left out (the count header's own size included)."""
    size = wire_size(key, None, [*base, *orig])
    if size <= limit:
        return orig, 0
    kept = list(orig)
    while kept:
        name, v = kept.pop()
        size -= header_size(name, v)
        mark = header_size(HEADERS_DROPPED, str(len(orig) - len(kept)).encode())
        if size + mark <= limit:
            break
    return kept, len(orig) - len(kept)
