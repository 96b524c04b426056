"""A corpus of malformed inputs, each with the dead-letter category it must get.

Every item is a distinct Kafka message (topic, key, value, headers). `stage` says where the
pipeline refuses it: `classify` (the ingester's parse: the message never reaches the inbox) or
`plan` (well-formed, recorded in the inbox, refused by its handler while being processed: the
inbox row is dead-lettered). What architecture.md says is skipped or ignored rather than
dead-lettered (well-formed non-command domain events, capability events no handler matches) is
not in the corpus.

`MAX_BYTES` is the size cap the corpus is built for: tests run the pipeline with
`ORCHESTRATOR_MAX_MESSAGE_BYTES=MAX_BYTES` (or `ProcessorConfig(max_message_bytes=MAX_BYTES)`).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.core.errors import Category
from orchestrator.core.inbound import Headers, RawMessage

MAX_BYTES = 64 * 1024
DOMAIN = "domain"
CAPABILITY = "capability"
CLASSIFY = "classify"
PLAN = "plan"
NAMESPACE = uuid.UUID("3b8c3f9e-2d0a-4c55-9a57-7f0b1c9d2e11")
COMMAND_EVENT = "Genesis.Session.Command.Received"


def _id(name: str, part: str = "id") -> str:
    return str(uuid.uuid5(NAMESPACE, f"{name}/{part}"))


@dataclass(frozen=True)
class BadInput:
    name: str
    category: Category
    value: bytes | None
    topic: str = DOMAIN  # DOMAIN or CAPABILITY: the stack's real topic names are filled in later
    key: bytes | None = None
    headers: Headers = ()
    stage: str = CLASSIFY
    message_id: str | None = None  # the envelope id of a PLAN item (its inbox row)
    session_id: str | None = None

    def raw(
        self,
        domain_topic: str = "genesis.domain.events",
        capability_topic: str = "genesis.capability.events",
        partition: int | None = 0,
        offset: int | None = None,
    ) -> RawMessage:
        topic = domain_topic if self.topic == DOMAIN else capability_topic
        return RawMessage(topic, self.value, self.key, self.headers, partition, offset)


@dataclass
class _Builder:
    items: list[BadInput] = field(default_factory=list)

    def add(
        self,
        name: str,
        category: Category,
        value: bytes | dict[str, Any] | list[Any] | None,
        *,
        topic: str = DOMAIN,
        key: bytes | str | None = "auto",
        headers: Headers = (),
        stage: str = CLASSIFY,
        message_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        if isinstance(value, dict | list):
            try:
                value = orjson.dumps(value)
            except TypeError:  # integers beyond 64 bits
                value = json.dumps(value, ensure_ascii=False).encode()
        k = f"bad-{name}".encode() if key == "auto" else key
        assert not isinstance(k, str)
        self.items.append(
            BadInput(name, category, value, topic, k, headers, stage, message_id, session_id)
        )


def command(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid `Character.Request` command, unique to `name`; `overrides` replace fields."""
    doc: dict[str, Any] = {
        "event_id": _id(name),
        "event_type": COMMAND_EVENT,
        "aggregate_type": "GenesisSession",
        "aggregate_id": _id(name, "session"),
        "payload": {
            "command_type": "Character.Request",
            "user_id": "u-1",
            "payload": {"name": "Ada"},
        },
        "metadata": {"correlation_id": _id(name, "corr"), "causation_id": None},
        "created_at": "2026-11-29T12:00:00Z",
    }
    doc.update(overrides)
    return doc


def command_with(name: str, **payload: Any) -> dict[str, Any]:
    """A command whose `payload` (the command part) has the given fields replaced."""
    doc = command(name)
    doc["payload"] = {**doc["payload"], **payload}
    return doc


def result(name: str, msg_type: str = "Character.Design.Generated", **data: Any) -> dict[str, Any]:
    """A valid capability result, unique to `name`; `data` fields are added to its data."""
    return {
        "id": _id(name),
        "ts": "2026-11-29T12:00:01Z",
        "type": msg_type,
        "data": {"session_id": _id(name, "session"), "correlation_id": _id(name, "corr"), **data},
    }


def without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    """A copy of `doc` without the field at `path`."""
    copy = orjson.loads(orjson.dumps(doc))
    node = copy
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return copy


def nested(depth: int, leaf: Any = "x") -> Any:
    node: Any = leaf
    for _ in range(depth):
        node = {"n": node}
    return node


def _pad(doc: dict[str, Any], size: int) -> bytes:
    """`doc` grown to exactly `size` bytes with a filler field."""
    base = orjson.dumps({**doc, "filler": ""})
    return orjson.dumps({**doc, "filler": "x" * (size - len(base))})


def _build() -> list[BadInput]:
    b = _Builder()
    add = b.add
    nc = Category.NOT_UTF8
    # -- not UTF-8 ------------------------------------------------------------------------------
    add(
        "utf16le-bom-command",
        nc,
        b"\xff\xfe" + orjson.dumps(command("u16")).decode().encode("utf-16-le"),
    )
    add(
        "utf16be-bom-command",
        nc,
        b"\xfe\xff" + orjson.dumps(command("u16be")).decode().encode("utf-16-be"),
    )
    add("utf32-command", nc, orjson.dumps(command("u32")).decode().encode("utf-32"))
    add("truncated-sequence", nc, b'{"event_type": "\xc3("}')
    add("encoded-surrogate", nc, b'{"a": "\xed\xa0\x80"}')
    add("overlong-slash", nc, b'{"a": "\xc0\xaf"}')
    add("lone-continuation-byte", nc, b'\x80{"a": 1}')
    add("invalid-byte-in-key", nc, b'{"\xff": 1}')
    add("beyond-u10ffff", nc, b'{"a": "\xf4\x90\x80\x80"}')
    add("latin1-name", nc, orjson.dumps(command("latin1")).replace(b'"Ada"', b'"Zo\xeb"'))
    add(
        "latin1-capability-data",
        nc,
        orjson.dumps(result("latin1-cap")).replace(b'"data":{', b'"data":{"note":"caf\xe9",'),
        topic=CAPABILITY,
    )
    add("cp1252-quotes", nc, b'{"event_id": \x93smart\x94}')
    add("invalid-utf8-null-key", nc, b"\xc3\x28", key=None)
    # -- not JSON -------------------------------------------------------------------------------
    nj = Category.NOT_JSON
    add("null-value", nj, None)
    add("empty-value", nj, b"")
    add("blank", nj, b"   ")
    add("whitespace-controls", nj, b"\n\t\r")
    add("open-brace", nj, b"{")
    add("single-quotes", nj, b"{'event_id': 'x'}")
    add("plain-text", nj, b"not json")
    add("trailing-comma", nj, b'{"a": 1,}')
    add("trailing-garbage", nj, orjson.dumps(command("tail")) + b" trailing")
    add("two-documents", nj, orjson.dumps(command("two-a")) + orjson.dumps(command("two-b")))
    add("raw-nul-after-document", nj, orjson.dumps(command("nul-after")) + b"\x00")
    add("utf8-bom-command", nj, b"\xef\xbb\xbf" + orjson.dumps(command("bom")))
    add("nan-literal", nj, b'{"event_id": NaN}')
    add("infinity-literal", nj, b'{"event_id": Infinity}')
    add("number-out-of-range", nj, orjson.dumps(command("inf")).replace(b'"u-1"', b"1e400"))
    add("negative-out-of-range", nj, b'{"type": "T", "data": {"score": -1e999}}', topic=CAPABILITY)
    add("unescaped-nul-in-string", nj, b'{"event_id": "a\x00b"}')
    add("unescaped-newline-in-string", nj, b'{"event_id": "a\nb"}')
    add("comment", nj, b'{"a": 1 /* comment */}')
    add("unquoted-key", nj, b"{event_id: 1}")
    add("truncated-document", nj, orjson.dumps(command("cut"))[:57])
    add("hex-number", nj, b'{"a": 0x10}')
    add("leading-zero", nj, b'{"a": 0123}')
    add("invalid-escape", nj, b'{"a": "\\x41"}')
    add("lone-surrogate-escape", nj, b'{"a": "\\ud800"}')
    add("extra-closing-brace", nj, b"{}}")
    add("lone-nul-byte", nj, b"\x00")
    add("not-json-null-key", nj, b"<xml/>", key=None)
    add(
        "truncated-capability",
        nj,
        orjson.dumps(result("cut-cap"))[:40],
        topic=CAPABILITY,
    )
    # -- not an object --------------------------------------------------------------------------
    no = Category.NOT_OBJECT
    add("empty-array", no, b"[]")
    add("array-of-command", no, [command("in-array")])
    add("integer", no, b"42")
    add("float", no, b"3.5")
    add("string", no, b'"a string"')
    add("true", no, b"true")
    add("false", no, b"false")
    add("json-null", no, b"null")
    add("negative-zero", no, b"-0")
    add("event-type-string", no, b'"Genesis.Session.Command.Received"')
    add("array-capability", no, b'[{"type": "Character.Design.Generated"}]', topic=CAPABILITY)
    # -- neither shape --------------------------------------------------------------------------
    us = Category.UNKNOWN_SHAPE
    add("empty-object", us, {})
    add("id-and-ts-only", us, {"id": "x", "ts": "2026-11-29T12:00:01Z"})
    add("camel-case-event-type", us, {"eventType": COMMAND_EVENT, "eventId": _id("camel")})
    add("upper-case-event-type", us, {"EVENT_TYPE": COMMAND_EVENT})
    add("wrapped-command", us, {"event": command("wrapped")})
    add("payload-without-type", us, without(command("no-type"), "event_type"))
    add("capability-no-type-no-data", us, {"id": _id("cap-bare"), "ts": "t"}, topic=CAPABILITY)
    # -- missing fields -------------------------------------------------------------------------
    mf = Category.MISSING_FIELD
    for fld in ("event_id", "aggregate_id"):
        add(f"{fld}-absent", mf, without(command(f"{fld}-absent"), fld))
        add(f"{fld}-null", mf, command(f"{fld}-null", **{fld: None}))
        add(f"{fld}-empty", mf, command(f"{fld}-empty", **{fld: ""}))
        add(f"{fld}-blank", mf, command(f"{fld}-blank", **{fld: "   "}))
    add("event_type-null", mf, command("et-null", event_type=None))
    add("event_type-empty", mf, command("et-empty", event_type=""))
    add("event_type-blank", mf, command("et-blank", event_type=" \t "))
    add("cap-data-absent", mf, without(result("data-absent"), "data"), topic=CAPABILITY)
    add("cap-data-null", mf, {**result("data-null"), "data": None}, topic=CAPABILITY)
    add("cap-type-absent", mf, without(result("type-absent"), "type"), topic=CAPABILITY)
    add("cap-type-empty", mf, {**result("type-empty"), "type": ""}, topic=CAPABILITY)
    add("cap-type-null", mf, {**result("type-null"), "type": None}, topic=CAPABILITY)
    add(
        "cap-session-absent",
        mf,
        without(result("session-absent"), "data", "session_id"),
        topic=CAPABILITY,
    )
    add("cap-session-empty", mf, result("session-empty", session_id=""), topic=CAPABILITY)
    add("cap-session-blank", mf, result("session-blank", session_id="  "), topic=CAPABILITY)
    add("cap-session-null", mf, result("session-null", session_id=None), topic=CAPABILITY)
    add("cap-data-empty-object", mf, {**result("data-empty"), "data": {}}, topic=CAPABILITY)
    # -- wrong types ----------------------------------------------------------------------------
    wt = Category.WRONG_TYPE
    for fld, values in {
        "event_id": (7, ["a"], {"id": "a"}, True, 12345678901234567890123),
        "event_type": (1, [COMMAND_EVENT]),
        "aggregate_id": (42, 1.5, {"id": "s"}),
        "aggregate_type": (False, 3),
        "payload": (["Character.Request"], "Character.Request", 0),
        "metadata": ("corr", [1]),
        "created_at": (1732881600, {"at": "now"}),
    }.items():
        for n, value in enumerate(values):
            name = f"{fld}-wrong-{type(value).__name__}-{n}"
            add(name, wt, command(name, **{fld: value}))
    add("duplicate-key-last-wins", wt, b'{"event_id": "a", "event_id": 5, "event_type": "X"}')
    for fld, value in (
        ("command_type", 5),
        ("command_type", ["Character.Request"]),
        ("command_type", True),
        ("command_type", False),
        ("payload", ["Ada"]),
        ("payload", "Ada"),
        ("user_id", 17),
        ("user_id", {"id": 1}),
    ):
        name = f"payload.{fld}-wrong-{type(value).__name__}-{value!s:.5}"
        add(name, wt, command_with(name, **{fld: value}))
    for fld, value in (
        ("id", 99),
        ("id", ["x"]),
        ("type", 3),
        ("type", ["Character.Design.Generated"]),
        ("ts", 1732881601),
        ("metadata", ["corr"]),
        ("data", ["session"]),
        ("data", "session"),
        ("data", 1),
    ):
        name = f"cap.{fld}-wrong-{type(value).__name__}"
        add(name, wt, {**result(name), fld: value}, topic=CAPABILITY)
    add("cap.session_id-int", wt, result("sid-int", session_id=5), topic=CAPABILITY)
    add(
        "cap.aggregate_id-int",
        wt,
        without(result("agg-int", aggregate_id=7), "data", "session_id"),
        topic=CAPABILITY,
    )
    # -- commands without a command type --------------------------------------------------------
    mc = Category.MISSING_COMMAND_TYPE
    add("command_type-absent", mc, without(command("ct-absent"), "payload", "command_type"))
    add("command_type-null", mc, command_with("ct-null", command_type=None))
    add("command_type-empty", mc, command_with("ct-empty", command_type=""))
    add("command_type-blank", mc, command_with("ct-blank", command_type="   "))
    add("command-payload-absent", mc, without(command("payload-absent"), "payload"))
    add("command-payload-null", mc, command("payload-null", payload=None))
    add("command-payload-empty", mc, command("payload-empty", payload={}))
    # -- unknown commands -----------------------------------------------------------------------
    uc = Category.UNKNOWN_COMMAND
    for n, ct in enumerate(
        (
            "Dragon.Summon",
            "character.request",
            "Character.Request ",
            "Character.Request.Extra",
            "\u0421haracter.Request",  # Cyrillic capital Es
            "Command.Genesis.Session.Unknown.Request",
            "Character.Request\u200b",  # zero-width space
            "\U0001f409.Request",
            "X" * 2000,
        )
    ):
        add(f"unknown-command-{n}", uc, command_with(f"unknown-command-{n}", command_type=ct))
    add("unknown-command-null-key", uc, command_with("uc-null-key", command_type="Nope"), key=None)
    # -- over the size cap ----------------------------------------------------------------------
    tl = Category.TOO_LARGE
    add("over-cap-by-one", tl, _pad(command("over-1"), MAX_BYTES + 1))
    add("twice-the-cap", tl, _pad(command("over-2x"), 2 * MAX_BYTES))
    add("over-cap-capability", tl, _pad(result("over-cap"), MAX_BYTES + 100), topic=CAPABILITY)
    add("over-cap-not-utf8", tl, b"\xff" * (MAX_BYTES + 1))
    add("over-cap-whitespace", tl, b" " * (MAX_BYTES + 7))
    add("over-cap-null-key", tl, _pad(command("over-nk"), MAX_BYTES + 3), key=None)
    # -- bad headers ----------------------------------------------------------------------------
    bh = Category.BAD_HEADERS
    for header in ("correlation_id", "correlation-id", "traceparent", "causation_id", "message_id"):
        name = f"header-{header}-not-utf8"
        add(name, bh, command(name), headers=((header, b"\xff\xfe\xfd"),))
    add(
        "header-type-not-utf8",
        bh,
        without(result("hdr-type"), "type"),
        topic=CAPABILITY,
        headers=(("type", b"\xc3\x28"),),
    )
    for header, first, second in (
        ("correlation_id", b"c-1", b"c-2"),
        ("type", b"Character.Design.Generated", b"Theme.Generated"),
        ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01", b"00-x"),
    ):
        name = f"header-{header}-repeated"
        topic = CAPABILITY if header == "type" else DOMAIN
        value = result(name) if topic == CAPABILITY else command(name)
        add(name, bh, value, topic=topic, headers=((header, first), (header, second)))
    # -- NUL characters -------------------------------------------------------------------------
    nul = Category.NUL_CHARACTER
    add("nul-in-event_id", nul, command("nul-eid", event_id="evt\u0000x"))
    add("nul-in-aggregate_id", nul, command("nul-agg", aggregate_id="\u0000"))
    add("nul-in-user-input", nul, command_with("nul-input", payload={"name": "A\u0000da"}))
    add("nul-in-user-input-key", nul, command_with("nul-ikey", payload={"na\u0000me": "Ada"}))
    add("nul-in-top-level-key", nul, {**command("nul-tkey"), "x\u0000": 1})
    add("nul-in-metadata-key", nul, command("nul-mkey", metadata={"\u0000": "c"}))
    add("nul-in-command_type", nul, command_with("nul-ct", command_type="Character.\u0000Request"))
    add("nul-in-list", nul, command_with("nul-list", payload={"tags": ["a", "b\u0000"]}))
    add("nul-in-unknown-shape", nul, {"\u0000": "\u0000"})
    add("nul-in-session_id", nul, result("nul-sid", session_id="s\u0000"), topic=CAPABILITY)
    add("nul-in-result-data", nul, result("nul-data", text="\u0000" * 3), topic=CAPABILITY)
    # -- nested too deep ------------------------------------------------------------------------
    td = Category.TOO_DEEP
    add("deep-user-input", td, command_with("deep-input", payload=nested(70)))
    add("deep-arrays", td, b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}")
    add("deep-beyond-parser-limit", td, b"[" * 2000 + b"]" * 2000)
    add("deep-objects-parser-limit", td, b'{"a":' * 1500 + b"1" + b"}" * 1500)
    add("deep-result-data", td, result("deep-data", content=nested(80)), topic=CAPABILITY)
    add("deep-metadata", td, command("deep-meta", metadata=nested(66)))
    # -- refused by the handler (recorded in the inbox, dead-lettered while processing) --------
    review = "Review.Quality.Evaluated"
    for name, category, msg_type, data in (
        ("review-score-text", wt, review, {"score": "high", "target_type": "character"}),
        ("review-score-bool", wt, review, {"score": True, "target_type": "character"}),
        ("review-score-missing", mf, review, {"target_type": "character"}),
        ("review-score-null", mf, "Review.Quality.Result", {"score": None}),
        ("review-attempts-text", wt, review, {"score": 5, "attempts": "1"}),
        ("review-max-attempts-list", wt, review, {"score": 5, "max_attempts": [3]}),
        ("review-threshold-object", wt, review, {"score": 5, "threshold": {"v": 7}}),
        ("review-target-type-int", wt, review, {"score": 9, "target_type": 5}),
        ("check-score-text", wt, "Review.Consistency.Checked", {"score": "x"}),
        ("check-threshold-text", wt, "Consistency.Checked", {"score": 1, "threshold": "y"}),
    ):
        doc = result(name, msg_type, **data)
        add(
            name,
            category,
            doc,
            topic=CAPABILITY,
            stage=PLAN,
            message_id=doc["id"],
            session_id=doc["data"]["session_id"],
        )
    return b.items


CORPUS: list[BadInput] = _build()


def by_category() -> Counter[str]:
    return Counter(item.category.value for item in CORPUS)
