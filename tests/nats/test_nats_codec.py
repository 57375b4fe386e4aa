"""Tests for the sans-IO NATS codec (flowmq.nats.codec).

The parser must give the same operations however the bytes are cut into
``feed()`` calls, report malformed input as one ``(OP_ERROR, text)`` after the
operations before it and then stay silent, and the encoders must produce the
nats-server wire format byte for byte.
"""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmq.nats.codec import (
    ERR_MAX_CONTROL_LINE,
    ERR_MAX_PAYLOAD,
    ERR_UNKNOWN_OP,
    OP_CONNECT,
    OP_ERROR,
    OP_HPUB,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_SUB,
    OP_UNSUB,
    BadHeader,
    encode_err,
    encode_headers,
    encode_hmsg,
    encode_info,
    encode_msg,
    parse_headers,
)
from flowmq.nats.codec import NatsParser as RunParser


# --------------------------------------------------------------------------
# Helpers: wire bytes a client would send, and ways of feeding them.
# --------------------------------------------------------------------------

HEADER_BLOCK = b"NATS/1.0\r\nFoo: bar\r\n\r\n"  # 22 bytes


def pub(subject, payload, reply=None, verb=b"PUB", sep=b" ", eol=b"\r\n"):
    args = [verb, subject] + ([reply] if reply is not None else []) + [b"%d" % len(payload)]
    return sep.join(args) + eol + payload + b"\r\n"


def hpub(subject, header_block, payload, reply=None, verb=b"HPUB", sep=b" ", eol=b"\r\n"):
    sizes = [b"%d" % len(header_block), b"%d" % (len(header_block) + len(payload))]
    args = [verb, subject] + ([reply] if reply is not None else []) + sizes
    return sep.join(args) + eol + header_block + payload + b"\r\n"


def sub(subject, sid, queue=None, verb=b"SUB", sep=b" ", eol=b"\r\n"):
    args = [verb, subject] + ([queue] if queue is not None else []) + [sid]
    return sep.join(args) + eol


def unsub(sid, max_msgs=None, verb=b"UNSUB", sep=b" ", eol=b"\r\n"):
    args = [verb, sid] + ([b"%d" % max_msgs] if max_msgs is not None else [])
    return sep.join(args) + eol


def connect(options, verb=b"CONNECT", sep=b" ", eol=b"\r\n"):
    return verb + sep + options + eol


class NatsParser(RunParser):
    """The parser, with each run of PUBs it hands out spread into one
    ``(OP_PUB, subject, reply, payload)`` per PUB: what most tests compare.
    The runs themselves are tested apart (section 5)."""

    def feed(self, data):
        return one_per_pub(RunParser.feed(self, data))


def one_per_pub(ops):
    spread = []
    for op in ops:
        if op[0] == OP_PUB:
            assert isinstance(op[3], list) and op[3], op
            spread.extend((OP_PUB, op[1], op[2], payload) for payload in op[3])
        else:
            spread.append(op)
    return spread


def feed_all(chunks, **limits):
    """Feed ``chunks`` in order to a fresh parser; return all operations."""
    parser = NatsParser(**limits)
    ops = []
    for chunk in chunks:
        ops.extend(parser.feed(chunk))
    return ops


def split_at(data, cuts):
    """``data`` cut at the (sorted, possibly repeated) positions ``cuts``."""
    chunks, prev = [], 0
    for cut in sorted(cuts):
        chunks.append(data[prev:cut])
        prev = cut
    chunks.append(data[prev:])
    return chunks


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


def feedings(data):
    """Every way the tests cut ``data``: whole, two pieces at each position, byte by byte."""
    yield "whole", [data]
    for cut in range(len(data) + 1):
        yield "split@%d" % cut, split_at(data, [cut])
    yield "bytewise", bytewise(data)


# --------------------------------------------------------------------------
# 1. Valid client operations, however they are fed.
# --------------------------------------------------------------------------

CONNECT_JSON = b'{"verbose":false,"pedantic":false,"name":"a client","lang":"python"}'

VALID = [
    ("connect", connect(CONNECT_JSON), [(OP_CONNECT, CONNECT_JSON)]),
    ("connect-lower-tab-lf", connect(b'{"echo": true}', verb=b"connect", sep=b"\t", eol=b"\n"),
     [(OP_CONNECT, b'{"echo": true}')]),
    ("connect-many-spaces", connect(b"{}", sep=b"   "), [(OP_CONNECT, b"{}")]),
    ("pub", pub(b"foo", b"hello"), [(OP_PUB, b"foo", None, b"hello")]),
    ("pub-reply", pub(b"foo.bar", b"hello", reply=b"_INBOX.1"),
     [(OP_PUB, b"foo.bar", b"_INBOX.1", b"hello")]),
    ("pub-lower-tabs-spaces", pub(b"foo", b"hello", reply=b"bar", verb=b"pub", sep=b" \t  "),
     [(OP_PUB, b"foo", b"bar", b"hello")]),
    ("pub-mixed-case-lf", pub(b"foo", b"hello", verb=b"Pub", eol=b"\n"),
     [(OP_PUB, b"foo", None, b"hello")]),
    ("pub-empty", pub(b"foo", b""), [(OP_PUB, b"foo", None, b"")]),
    ("pub-empty-reply", pub(b"foo", b"", reply=b"r"), [(OP_PUB, b"foo", b"r", b"")]),
    ("pub-crlf-payload", pub(b"foo", b"\r\n"), [(OP_PUB, b"foo", None, b"\r\n")]),
    ("pub-protocol-in-payload", pub(b"foo", b"PING\r\nPUB x 1\r\n\r\n"),
     [(OP_PUB, b"foo", None, b"PING\r\nPUB x 1\r\n\r\n")]),
    ("pub-binary", pub(b"foo", bytes(range(256))), [(OP_PUB, b"foo", None, bytes(range(256)))]),
    ("hpub", hpub(b"foo", HEADER_BLOCK, b"hello"), [(OP_HPUB, b"foo", None, HEADER_BLOCK, b"hello")]),
    ("hpub-reply", hpub(b"foo", HEADER_BLOCK, b"hello", reply=b"bar"),
     [(OP_HPUB, b"foo", b"bar", HEADER_BLOCK, b"hello")]),
    ("hpub-lower-tabs-lf", hpub(b"foo", HEADER_BLOCK, b"hi", reply=b"bar", verb=b"hpub", sep=b"\t ", eol=b"\n"),
     [(OP_HPUB, b"foo", b"bar", HEADER_BLOCK, b"hi")]),
    ("hpub-headers-only", hpub(b"foo", HEADER_BLOCK, b""), [(OP_HPUB, b"foo", None, HEADER_BLOCK, b"")]),
    ("hpub-crlf-payload", hpub(b"foo", HEADER_BLOCK, b"a\r\nb"),
     [(OP_HPUB, b"foo", None, HEADER_BLOCK, b"a\r\nb")]),
    ("hpub-zero-sizes", b"HPUB foo 0 0\r\n\r\n", [(OP_HPUB, b"foo", None, b"", b"")]),
    ("sub", sub(b"foo", b"1"), [(OP_SUB, b"foo", None, b"1")]),
    ("sub-queue", sub(b"foo.*", b"42", queue=b"workers"), [(OP_SUB, b"foo.*", b"workers", b"42")]),
    ("sub-lower-tabs-lf", sub(b"foo.>", b"7", queue=b"q", verb=b"sub", sep=b"\t\t", eol=b"\n"),
     [(OP_SUB, b"foo.>", b"q", b"7")]),
    ("sub-spaces", sub(b"foo", b"abc", sep=b"    "), [(OP_SUB, b"foo", None, b"abc")]),
    ("unsub", unsub(b"1"), [(OP_UNSUB, b"1", None)]),
    ("unsub-max", unsub(b"1", 5), [(OP_UNSUB, b"1", 5)]),
    ("unsub-lower-tab-lf", unsub(b"9", 0, verb=b"unsub", sep=b" \t", eol=b"\n"), [(OP_UNSUB, b"9", 0)]),
    # nats-server reads a max that is not a count as "no max": unsubscribe now.
    ("unsub-non-numeric-max", b"UNSUB 1 x\r\n", [(OP_UNSUB, b"1", None)]),
    ("unsub-negative-max", b"UNSUB 1 -1\r\n", [(OP_UNSUB, b"1", None)]),
    ("ping", b"PING\r\n", [(OP_PING,)]),
    ("pong", b"PONG\r\n", [(OP_PONG,)]),
    ("ping-lower-lf", b"ping\n", [(OP_PING,)]),
    ("pong-mixed-lf", b"PoNg\n", [(OP_PONG,)]),
]
VALID_IDS = [case[0] for case in VALID]


@pytest.mark.parametrize("name, data, expected", VALID, ids=VALID_IDS)
def test_valid_op_every_feeding(name, data, expected):
    for how, chunks in feedings(data):
        assert feed_all(chunks) == expected, how


@pytest.mark.parametrize("name, data, expected", VALID, ids=VALID_IDS)
def test_incomplete_frame_yields_nothing(name, data, expected):
    for cut in range(len(data)):
        assert NatsParser().feed(data[:cut]) == [], cut


@pytest.mark.parametrize("name, data, expected", VALID, ids=VALID_IDS)
def test_op_returned_by_the_feed_that_completes_it(name, data, expected):
    parser = NatsParser()
    assert parser.feed(data[:-1]) == []
    assert parser.feed(data[-1:]) == expected
    assert parser.feed(b"") == []
    assert parser.feed(b"PING\r\n") == [(OP_PING,)]  # and it keeps going


def test_many_frames_in_one_lump():
    lump = b"".join(data for _, data, _ in VALID)
    expected = [op for _, _, ops in VALID for op in ops]
    assert len(expected) == len(VALID)
    assert NatsParser().feed(lump) == expected
    assert feed_all(bytewise(lump)) == expected
    for cut in range(len(lump) + 1):
        assert feed_all(split_at(lump, [cut])) == expected, cut


def test_lump_fed_in_uneven_pieces():
    lump = b"".join(data for _, data, _ in VALID) * 3
    expected = [op for _, _, ops in VALID for op in ops] * 3
    for size in (2, 3, 7, 13, 64, 1000):
        chunks = [lump[i:i + size] for i in range(0, len(lump), size)]
        assert feed_all(chunks) == expected, size


def test_payload_may_exceed_control_line_limit():
    payload = b"x" * 200  # no newline at all, longer than the control line limit
    data = pub(b"foo", payload) + b"PING\r\n"
    expected = [(OP_PUB, b"foo", None, payload), (OP_PING,)]
    for how, chunks in feedings(data):
        assert feed_all(chunks, max_control_line=32) == expected, how


def test_payload_of_exactly_max_payload_is_accepted():
    assert NatsParser(max_payload=16).feed(pub(b"foo", b"x" * 16)) == [(OP_PUB, b"foo", None, b"x" * 16)]
    block = b"NATS/1.0\r\n\r\n"
    data = hpub(b"foo", block, b"y" * (16 - len(block)))
    assert NatsParser(max_payload=16).feed(data) == [(OP_HPUB, b"foo", None, block, b"y" * 4)]


# The limit is on the control line; a line of exactly max_control_line bytes is
# not "longer than" it, whichever terminator it has.
CONTROL_LIMIT = 32


def sub_line(length):
    """A SUB control line (without terminator) of exactly ``length`` bytes."""
    line = b"SUB " + b"a" * (length - len(b"SUB  1")) + b" 1"
    assert len(line) == length
    return line


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_control_line_of_exactly_the_limit_is_accepted(eol):
    line = sub_line(CONTROL_LIMIT)
    expected = [(OP_SUB, line.split()[1], None, b"1")]
    for how, chunks in feedings(line + eol):
        assert feed_all(chunks, max_control_line=CONTROL_LIMIT) == expected, how


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_control_line_one_over_the_limit_is_rejected(eol):
    data = b"PING\r\n" + sub_line(CONTROL_LIMIT + 1) + eol
    expected = [(OP_PING,), (OP_ERROR, ERR_MAX_CONTROL_LINE)]
    for how, chunks in feedings(data):
        assert feed_all(chunks, max_control_line=CONTROL_LIMIT) == expected, how


def test_unterminated_line_at_the_limit_waits_for_more():
    parser = NatsParser(max_control_line=CONTROL_LIMIT)
    assert parser.feed(sub_line(CONTROL_LIMIT)) == []
    assert parser.feed(b"\n") == [(OP_SUB, sub_line(CONTROL_LIMIT).split()[1], None, b"1")]


# --------------------------------------------------------------------------
# 2. Malformed input: ops before it, then one OP_ERROR, then silence.
# --------------------------------------------------------------------------

ANY = object()  # the error text is not pinned down, only that there is one

PING_OP = [(OP_PING,)]
PUB_OP = [(OP_PUB, b"foo", None, b"hello")]

ERRORS = [
    # (id, data, ops before the error, error text, parser limits)
    ("unknown-verb", b"PING\r\nFOO bar\r\n", PING_OP, ERR_UNKNOWN_OP, {}),
    ("unknown-verb-lf", b"FOO\n", [], ERR_UNKNOWN_OP, {}),
    ("server-verb-from-client", b"MSG foo 1 5\r\nhello\r\n", [], ERR_UNKNOWN_OP, {}),
    ("verb-prefix", b"PINGX\r\n", [], ERR_UNKNOWN_OP, {}),
    ("empty-line-crlf", b"PING\r\n\r\nPING\r\n", PING_OP, ERR_UNKNOWN_OP, {}),
    ("empty-line-lf", b"\n", [], ERR_UNKNOWN_OP, {}),
    ("blank-line", b" \t \r\n", [], ERR_UNKNOWN_OP, {}),
    ("pub-no-args", b"PUB\r\n", [], ANY, {}),
    ("pub-missing-size", pub(b"foo", b"hello") + b"PUB foo\r\n", PUB_OP, ANY, {}),
    ("pub-non-numeric-size", b"PUB foo bar\r\nhello\r\n", [], ANY, {}),
    ("pub-negative-size", b"PUB foo -1\r\n\r\n", [], ANY, {}),
    ("pub-size-with-junk", b"PUB foo 5x\r\nhello\r\n", [], ANY, {}),
    ("pub-too-many-args", b"PUB foo bar baz 5\r\nhello\r\n", [], ANY, {}),
    ("pub-payload-longer-than-size", pub(b"foo", b"hello") + b"PUB foo 3\r\nhello\r\n", PUB_OP, ANY, {}),
    ("pub-payload-then-junk", b"PUB foo 5\r\nhelloXY", [], ANY, {}),
    ("pub-payload-then-lf", b"PUB foo 5\r\nhello\nPING\r\n", [], ANY, {}),
    ("pub-empty-payload-no-crlf", b"PUB foo 0\r\nPING\r\n", [], ANY, {}),
    ("pub-over-max-payload", b"PING\r\nPUB foo 17\r\n", PING_OP, ERR_MAX_PAYLOAD, {"max_payload": 16}),
    ("pub-reply-over-max-payload", b"PUB foo bar 1000000000000\r\n", [], ERR_MAX_PAYLOAD, {}),
    ("hpub-over-max-payload", b"HPUB foo 12 17\r\n", [], ERR_MAX_PAYLOAD, {"max_payload": 16}),
    ("hpub-header-over-total", b"PING\r\nHPUB foo 10 5\r\n", PING_OP, ANY, {}),
    ("hpub-missing-header-size", b"HPUB foo 5\r\nhello\r\n", [], ANY, {}),
    ("hpub-non-numeric-header-size", b"HPUB foo x 5\r\nhello\r\n", [], ANY, {}),
    ("hpub-non-numeric-total", b"HPUB foo bar 2 x\r\n", [], ANY, {}),
    ("hpub-too-many-args", b"HPUB a b c 0 0\r\n\r\n", [], ANY, {}),
    ("hpub-payload-then-junk", b"HPUB foo 0 2\r\nhiXX", [], ANY, {}),
    ("control-line-too-long", b"PING\r\nSUB " + b"a" * 100 + b" 1\r\n", PING_OP, ERR_MAX_CONTROL_LINE,
     {"max_control_line": 64}),
    ("control-line-too-long-lf", b"SUB " + b"a" * 100 + b" 1\n", [], ERR_MAX_CONTROL_LINE,
     {"max_control_line": 64}),
    ("control-line-too-long-no-newline", b"PING\r\nSUB " + b"a" * 100, PING_OP, ERR_MAX_CONTROL_LINE,
     {"max_control_line": 64}),
    ("junk-too-long-no-newline", b"x" * 65, [], ERR_MAX_CONTROL_LINE, {"max_control_line": 64}),
    ("pub-line-too-long-no-newline", b"PUB foo " + b"9" * 70, [], ERR_MAX_CONTROL_LINE,
     {"max_control_line": 64}),
    ("sub-no-args", b"SUB\r\n", [], ANY, {}),
    ("sub-one-arg", b"PING\r\nSUB foo\r\n", PING_OP, ANY, {}),
    ("sub-too-many-args", b"SUB foo q 1 extra\r\n", [], ANY, {}),
    ("unsub-no-args", b"UNSUB\r\n", [], ANY, {}),
    ("unsub-too-many-args", b"UNSUB 1 2 3\r\n", [], ANY, {}),
    ("pub-size-too-many-digits", b"PUB foo " + b"9" * 19 + b"\r\n", [], ANY, {}),
]
ERROR_IDS = [case[0] for case in ERRORS]


def assert_error_result(ops, before, text):
    assert ops[:-1] == before
    assert ops[-1][0] == OP_ERROR, ops
    assert len(ops[-1]) == 2
    if text is ANY:
        assert isinstance(ops[-1][1], str) and ops[-1][1]
    else:
        assert ops[-1][1] == text


@pytest.mark.parametrize("name, data, before, text, limits", ERRORS, ids=ERROR_IDS)
def test_malformed_input_every_feeding(name, data, before, text, limits):
    for how, chunks in feedings(data):
        try:
            assert_error_result(feed_all(chunks, **limits), before, text)
        except AssertionError as exc:
            raise AssertionError("%s: %s" % (how, exc)) from None


@pytest.mark.parametrize("name, data, before, text, limits", ERRORS, ids=ERROR_IDS)
def test_parser_is_silent_after_an_error(name, data, before, text, limits):
    parser = NatsParser(**limits)
    assert_error_result(parser.feed(data), before, text)
    for more in (b"PING\r\n", pub(b"foo", b"hello"), b"", b"\r\n", b"SUB foo 1\r\n" * 3):
        assert parser.feed(more) == []


@pytest.mark.parametrize("name, data, before, text, limits", ERRORS, ids=ERROR_IDS)
def test_error_in_one_feed_after_ops_in_earlier_feeds(name, data, before, text, limits):
    parser = NatsParser(**limits)
    assert parser.feed(b"PONG\r\n") == [(OP_PONG,)]
    assert_error_result(parser.feed(data), before, text)


def test_max_payload_detected_from_control_line_alone():
    parser = NatsParser(max_payload=1024)
    assert parser.feed(b"PUB foo 1025\r\n") == [(OP_ERROR, ERR_MAX_PAYLOAD)]
    assert parser.feed(b"x" * 1025 + b"\r\n") == []


def test_max_payload_reported_before_payload_arrives_after_other_ops():
    parser = NatsParser(max_payload=10)
    assert parser.feed(b"SUB foo 1\r\nHPUB foo 2 11\r\nNA") == [
        (OP_SUB, b"foo", None, b"1"), (OP_ERROR, ERR_MAX_PAYLOAD)]


def test_control_line_limit_detected_before_newline():
    parser = NatsParser(max_control_line=64)
    assert parser.feed(b"PUB " + b"a" * 60) == []  # 64 bytes: still within the limit
    assert parser.feed(b"b") == [(OP_ERROR, ERR_MAX_CONTROL_LINE)]
    assert parser.feed(b" 5\r\nhello\r\n") == []


# --------------------------------------------------------------------------
# 3. Property-based: random valid op sequences, random cuts, random bytes.
# --------------------------------------------------------------------------

SAFE = string.ascii_letters + string.digits + "._-*>$"
subjects = st.text(alphabet=SAFE, min_size=1, max_size=16).map(str.encode)
sids = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8).map(str.encode)
payloads = st.lists(
    st.one_of(st.binary(max_size=12), st.sampled_from([b"\r\n", b"\n", b"\r", b"PING\r\n", b"PUB a 1\r\n"])),
    max_size=5,
).map(b"".join)
seps = st.lists(st.sampled_from([b" ", b"\t"]), min_size=1, max_size=3).map(b"".join)
eols = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def verbs(draw, verb):
    """``verb`` in random letter case."""
    flips = draw(st.lists(st.booleans(), min_size=len(verb), max_size=len(verb)))
    return b"".join(verb[i:i + 1].lower() if flip else verb[i:i + 1] for i, flip in enumerate(flips))


@st.composite
def client_ops(draw):
    """One random valid client operation: ``(expected op tuple, wire bytes)``."""
    kind = draw(st.sampled_from(["PUB", "HPUB", "SUB", "UNSUB", "CONNECT", "PING", "PONG"]))
    verb = draw(verbs(kind.encode()))
    sep, eol = draw(seps), draw(eols)
    if kind == "PUB":
        subject, reply, payload = draw(subjects), draw(st.none() | subjects), draw(payloads)
        return (OP_PUB, subject, reply, payload), pub(subject, payload, reply, verb, sep, eol)
    if kind == "HPUB":
        subject, reply, payload = draw(subjects), draw(st.none() | subjects), draw(payloads)
        block = draw(st.sampled_from([HEADER_BLOCK, b"NATS/1.0 503\r\n\r\n"]) | payloads)
        return (OP_HPUB, subject, reply, block, payload), hpub(subject, block, payload, reply, verb, sep, eol)
    if kind == "SUB":
        subject, queue, sid = draw(subjects), draw(st.none() | subjects), draw(sids)
        return (OP_SUB, subject, queue, sid), sub(subject, sid, queue, verb, sep, eol)
    if kind == "UNSUB":
        sid, max_msgs = draw(sids), draw(st.none() | st.integers(0, 10**12))
        return (OP_UNSUB, sid, max_msgs), unsub(sid, max_msgs, verb, sep, eol)
    if kind == "CONNECT":
        options = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.booleans() | st.integers()))
        options = json.dumps(options).encode()
        return (OP_CONNECT, options), connect(options, verb, sep, eol)
    return ((OP_PING,) if kind == "PING" else (OP_PONG,)), verb + eol


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(client_ops(), max_size=12), data=st.data())
def test_random_valid_ops_random_cuts(ops, data):
    wire = b"".join(frame for _, frame in ops)
    expected = [op for op, _ in ops]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="cuts")
    assert feed_all([wire]) == expected
    assert feed_all(split_at(wire, cuts)) == expected


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(client_ops(), min_size=1, max_size=4))
def test_random_valid_ops_bytewise(ops):
    wire = b"".join(frame for _, frame in ops)
    assert feed_all(bytewise(wire)) == [op for op, _ in ops]


protocolish = st.lists(
    st.one_of(
        st.binary(max_size=6),
        st.sampled_from([b"PUB ", b"HPUB ", b"SUB ", b"UNSUB ", b"PING", b"PONG", b"CONNECT ",
                         b"foo ", b"1 ", b"5", b"0 ", b"\r\n", b"\n", b"\r", b"\t", b" ", b"hello"]),
    ),
    max_size=30,
).map(b"".join)
limits = st.fixed_dictionaries({"max_control_line": st.integers(1, 40), "max_payload": st.integers(0, 20)})


def assert_well_formed(ops):
    for op in ops:
        assert isinstance(op, tuple) and op[0] in (OP_PUB, OP_HPUB, OP_SUB, OP_UNSUB, OP_CONNECT,
                                                   OP_PING, OP_PONG, OP_ERROR)
    errors = [i for i, op in enumerate(ops) if op[0] == OP_ERROR]
    assert errors in ([], [len(ops) - 1])  # at most one error, and it comes last


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200) | protocolish, limits=limits, data=st.data())
def test_random_bytes_never_raise(garbage, limits, data):
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=6), label="cuts")
    parser = NatsParser(**limits)
    ops = []
    for chunk in split_at(garbage, cuts):
        ops.extend(parser.feed(chunk))
    assert_well_formed(ops)
    if ops and ops[-1][0] == OP_ERROR:
        assert parser.feed(b"PING\r\n") == []


@settings(max_examples=300, deadline=None)
@given(garbage=protocolish, limits=limits, data=st.data())
def test_random_bytes_same_ops_however_cut(garbage, limits, data):
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=6), label="cuts")
    assert feed_all(split_at(garbage, cuts), **limits) == feed_all([garbage], **limits)


# --------------------------------------------------------------------------
# 4. Encoders for what the server sends, and the header block codec.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args, wire", [
    ((b"foo", b"1", None, b"hello"), b"MSG foo 1 5\r\nhello\r\n"),
    ((b"foo", b"1", b"bar", b"hello"), b"MSG foo 1 bar 5\r\nhello\r\n"),
    ((b"foo.bar", b"sid9", None, b""), b"MSG foo.bar sid9 0\r\n\r\n"),
    ((b"foo", b"1", b"_INBOX.x", b"a\r\nb"), b"MSG foo 1 _INBOX.x 4\r\na\r\nb\r\n"),
])
def test_encode_msg(args, wire):
    assert encode_msg(*args) == wire


@pytest.mark.parametrize("args, wire", [
    ((b"foo", b"1", None, HEADER_BLOCK, b"hello"), b"HMSG foo 1 22 27\r\n" + HEADER_BLOCK + b"hello\r\n"),
    ((b"foo", b"1", b"bar", HEADER_BLOCK, b"hello"), b"HMSG foo 1 bar 22 27\r\n" + HEADER_BLOCK + b"hello\r\n"),
    ((b"foo", b"2", None, b"NATS/1.0 503\r\n\r\n", b""), b"HMSG foo 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"),
])
def test_encode_hmsg(args, wire):
    assert len(HEADER_BLOCK) == 22
    assert encode_hmsg(*args) == wire


def read_server_frame(frame):
    """Split a MSG/HMSG frame into (args, header block, payload), checking its sizes."""
    head, sep, rest = frame.partition(b"\r\n")
    assert sep and rest.endswith(b"\r\n")
    body = rest[:-2]
    args = head.split(b" ")
    if args[0] == b"HMSG":
        hsize, total = int(args[-2]), int(args[-1])
        assert total == len(body)
        return args[1:-2], body[:hsize], body[hsize:]
    assert args[0] == b"MSG"
    assert int(args[-1]) == len(body)
    return args[1:-1], None, body


@settings(max_examples=200, deadline=None)
@given(subject=subjects, sid=sids, reply=st.none() | subjects, block=payloads, payload=payloads)
def test_server_frames_carry_their_sizes(subject, sid, reply, block, payload):
    names = [subject, sid] + ([reply] if reply else [])
    assert read_server_frame(encode_msg(subject, sid, reply, payload)) == (names, None, payload)
    assert read_server_frame(encode_hmsg(subject, sid, reply, block, payload)) == (names, block, payload)


def test_encode_info():
    info = {"server_id": "abc", "version": "2.10.0", "headers": True, "max_payload": 1048576}
    wire = encode_info(info)
    assert wire == b'INFO {"server_id":"abc","version":"2.10.0","headers":true,"max_payload":1048576}\r\n'
    assert json.loads(wire[len(b"INFO "):-2]) == info


@pytest.mark.parametrize("text, wire", [
    ("Unknown Protocol Operation", b"-ERR 'Unknown Protocol Operation'\r\n"),
    (ERR_MAX_PAYLOAD, b"-ERR 'Maximum Payload Violation'\r\n"),
    ("Authorization Violation", b"-ERR 'Authorization Violation'\r\n"),
])
def test_encode_err(text, wire):
    assert encode_err(text) == wire


@pytest.mark.parametrize("pairs, status, block", [
    ((), b"", b"NATS/1.0\r\n\r\n"),
    ((), b"503", b"NATS/1.0 503\r\n\r\n"),
    ((("Foo", "bar"),), b"", HEADER_BLOCK),
    ((("A", "1"), ("B", "two words"), ("A", "3")), b"", b"NATS/1.0\r\nA: 1\r\nB: two words\r\nA: 3\r\n\r\n"),
    ((("Nats-Msg-Id", "x"),), b"100", b"NATS/1.0 100\r\nNats-Msg-Id: x\r\n\r\n"),
])
def test_encode_headers(pairs, status, block):
    assert encode_headers(pairs, status=status) == block
    assert parse_headers(block) == (status, pairs)


@pytest.mark.parametrize("block, status, pairs", [
    (b"NATS/1.0 503\r\n\r\n", b"503", ()),
    (b"NATS/1.0 503 No Responders\r\n\r\n", b"503", ()),
    (b"NATS/1.0 404 No Messages\r\nFoo: bar\r\n\r\n", b"404", (("Foo", "bar"),)),
    (b"NATS/1.0\r\n\r\n", b"", ()),
    (b"NATS/1.0\r\nX:a:b\r\n\r\n", b"", (("X", "a:b"),)),
    (b"NATS/1.0\r\n  Name \t:   v  w \t\r\nEmpty:\r\n\r\n", b"", (("Name", "v  w"), ("Empty", ""))),
])
def test_parse_headers(block, status, pairs):
    assert parse_headers(block) == (status, pairs)


@pytest.mark.parametrize("block", [
    b"",
    b"HTTP/1.1 200\r\n\r\n",
    b"nats/1.0\r\n\r\n",
    b"Foo: bar\r\n\r\n",
    b"NATS/1.0",
    b"NATS/1.0\r\n",
    b"NATS/1.0\r\nFoo: bar\r\n",
    b"NATS/1.0\r\nFoo: bar\r\n\r",
    b"NATS/1.0\r\nno colon here\r\n\r\n",
    b"NATS/1.0\r\n: empty name\r\n\r\n",
])
def test_parse_headers_rejects_bad_blocks(block):
    with pytest.raises(BadHeader):
        parse_headers(block)
    assert issubclass(BadHeader, ValueError)


PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != ":")
header_names = st.text(alphabet=PRINTABLE.replace(" ", ""), min_size=1, max_size=12)
header_values = st.text(alphabet=PRINTABLE, max_size=20).map(str.strip)
statuses = st.sampled_from([b"", b"100", b"404", b"408", b"503"])


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(header_names, header_values), max_size=6).map(tuple), status=statuses)
def test_headers_round_trip(pairs, status):
    block = encode_headers(pairs, status=status)
    assert block.startswith(b"NATS/1.0") and block.endswith(b"\r\n\r\n")
    assert parse_headers(block) == (status, pairs)
    # and the block travels intact through HPUB
    wire = hpub(b"subj", block, b"payload")
    assert NatsParser().feed(wire) == [(OP_HPUB, b"subj", None, block, b"payload")]


# --------------------------------------------------------------------------
# 5. Runs: PUBs in a row with the same control line come as one operation.
# --------------------------------------------------------------------------

def test_pubs_with_the_same_line_come_as_one_run():
    ops = RunParser().feed(pub(b"a", b"one") + pub(b"a", b"two") + pub(b"a", b"six") + b"PING\r\n")
    assert ops == [(OP_PUB, b"a", None, [b"one", b"two", b"six"]), (OP_PING,)]


def test_a_run_ends_where_the_line_changes():
    wire = (pub(b"a", b"one") + pub(b"a", b"two")  # a run
            + pub(b"a", b"three")  # another size
            + pub(b"a", b"four", reply=b"r") + pub(b"a", b"five", reply=b"r")  # a reply subject
            + pub(b"b", b"six")  # another subject
            + b"PING\r\n" + pub(b"b", b"sev")  # the same line after another operation
            + pub(b"b", b"eig", eol=b"\n"))  # the same arguments, another line end
    assert RunParser().feed(wire) == [
        (OP_PUB, b"a", None, [b"one", b"two"]),
        (OP_PUB, b"a", None, [b"three"]),
        (OP_PUB, b"a", b"r", [b"four", b"five"]),
        (OP_PUB, b"b", None, [b"six"]),
        (OP_PING,),
        (OP_PUB, b"b", None, [b"sev"]),
        (OP_PUB, b"b", None, [b"eig"]),
    ]


def test_a_run_goes_on_after_a_payload_that_a_read_cut_off():
    parser = RunParser()
    assert parser.feed(pub(b"a", b"one") + pub(b"a", b"two")[:9]) == [(OP_PUB, b"a", None, [b"one"])]
    assert parser.feed(pub(b"a", b"two")[9:] + pub(b"a", b"six")) == [(OP_PUB, b"a", None, [b"two", b"six"])]
    assert parser.feed(pub(b"a", b"ten")) == [(OP_PUB, b"a", None, [b"ten"])]  # a new read, a new run
    # The same line with a payload that does not end in CR LF is an error, as it is the first time.
    assert parser.feed(b"PUB a 3\r\nxyzPUB a 3\r\n") == [(OP_ERROR, ERR_UNKNOWN_OP)]


@pytest.mark.parametrize("at", range(len(b"PUB a 10\r\n"), len(b"PUB a 10\r\n0123456789\r\n")))
def test_a_payload_in_two_reads_is_whole_wherever_the_second_begins(at):
    """Cut anywhere from the payload's first byte to its CRLF's last."""
    wire = pub(b"a", b"0123456789") + pub(b"a", b"abcdefghij")
    parser = RunParser()
    ops = parser.feed(wire[:at]) + parser.feed(wire[at:])
    assert one_per_pub(ops) == [(OP_PUB, b"a", None, b"0123456789"), (OP_PUB, b"a", None, b"abcdefghij")]
    for payload in (op[3][0] for op in ops):
        assert type(payload) is bytes


@pytest.mark.parametrize("trailer", [b"\rx", b"xx", b"x\n"])
def test_a_payload_in_two_reads_needs_its_crlf_too(trailer):
    parser = RunParser()
    assert parser.feed(b"PUB a 10\r\n01234") == []
    assert parser.feed(b"56789" + trailer + b"PING\r\n") == [(OP_ERROR, ERR_UNKNOWN_OP)]


repeated_pubs = st.lists(
    st.tuples(st.sampled_from([b"a", b"b.c"]), st.sampled_from([None, b"_INBOX.1"]),
              st.sampled_from([b"", b"xy", b"\r\n", b"PUB a 2\r\nxy\r\n"])),
    max_size=20)


@settings(max_examples=300, deadline=None)
@given(pubs=repeated_pubs, eol=eols, pings=st.lists(st.integers(0, 20), max_size=3), data=st.data())
def test_runs_hold_every_pub_in_order_however_cut(pubs, eol, pings, data):
    frames = [pub(subject, payload, reply, eol=eol) for subject, reply, payload in pubs]
    expected = [(OP_PUB, subject, reply, payload) for subject, reply, payload in pubs]
    for at in sorted(set(pings), reverse=True):
        at = min(at, len(frames))
        frames.insert(at, b"PING\r\n")
        expected.insert(at, (OP_PING,))
    wire = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6), label="cuts")
    parser = RunParser()
    ops = []
    for chunk in split_at(wire, cuts):
        ops.extend(parser.feed(chunk))
    assert one_per_pub(ops) == expected
    # Uncut, every run is as long as it can be: no two PUB operations in a row have the same line.
    lines = [(op[1], op[2], len(op[3][0])) if op[0] == OP_PUB else op for op in RunParser().feed(wire)]
    assert all(a != b for a, b in zip(lines, lines[1:]) if a[0] != OP_PING)
