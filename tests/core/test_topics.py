"""Unit tests of the unified topic model and its NATS mapping.

Covers the percent-escape rule of ``LevelGrammar`` (for the canonical topic
grammar TOPIC_LEVEL and for NATS_TOKEN), which is one-to-one both ways
(value -> text -> value and text -> value -> text), the NATS subject <->
topic conversions in both directions (every subject and every topic name
round-trips byte for byte, and the documented mapping examples), filter
conversion, and the validation of topics and filters.
"""

from __future__ import annotations


import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowmq.core.router import Router, Subscription
from flowmq.core.topics import (
    TOPIC_LEVEL,
    InvalidTopic,
    is_wildcard_filter,
    levels_of_topic,
    topic_from_levels,
    validate_filter,
    validate_topic,
)
from flowmq.nats.subjects import NATS_TOKEN, filter_to_topic_filter, subject_to_topic, topic_to_subject

# --- strategies -----------------------------------------------------------------

TRICKY = ["", "%", ".", "/", "+", "#", "*", ">", " ", "%2E", "%25", "%00", "%2F", "%2e", "50%", "%zz", "%2", "a.b", "%%2F"]

#: Level values: arbitrary text, the tricky values themselves, and text over an
#: alphabet of special characters so that escape-like combinations are frequent.
level_values = st.one_of(
    st.text(),
    st.sampled_from(TRICKY),
    st.text(alphabet="%025AEF/.+#*> \t\r\na", max_size=8),
)

#: Text over the characters of the escape codes (of both grammars), so that
#: escape-looking combinations (``%2E``, ``%252F``, ``%2500`` ...) are frequent.
#: (Its subsets are lists: hypothesis 6.141, PyPy 3.9's, drops a filter on a
#: ``sampled_from`` alphabet.)
ESCAPE_ALPHABET = "%0259ABCDEF/+#*> \t\r\n.a"
#: Texts that look like escapes of one grammar or the other, or once did.
ESCAPE_LOOKALIKES = ["%2E", "%25", "%2525", "%25zz", "%252E", "%25252E", "%2F", "%252F", "%00", "%2500",
                     "%252500", "%2A", "%3E", "%2B", "%23", "a%20b", "%2Ax", "%", "%%2E", "%2", "50%"]

# Every token nats-server takes in a publish subject outside pedantic mode
# (it also takes bytes that are not UTF-8, which FlowMQ refuses).
token_chars = st.characters(codec="utf-8").filter(lambda c: c != "." and not c.isspace())
nats_tokens = st.one_of(
    st.text(alphabet=token_chars, min_size=1, max_size=8),
    st.text(alphabet=[c for c in ESCAPE_ALPHABET if c != "." and not c.isspace()], min_size=1, max_size=10),
    st.sampled_from(ESCAPE_LOOKALIKES + ["*", ">", "+", "#"]),
)
nats_subjects = st.lists(nats_tokens, min_size=1, max_size=5).map(".".join)

# Every level of a topic name (an MQTT topic name): any text but "/", "+", "#".
topic_level_texts = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8").filter(lambda c: c not in "/+#"), max_size=8),
    st.text(alphabet=[c for c in ESCAPE_ALPHABET if c not in "/+#"], max_size=10),
    st.sampled_from(ESCAPE_LOOKALIKES + ["*", ">", ""]),
)
topic_names = st.lists(topic_level_texts, min_size=1, max_size=5).map("/".join)


# --- LevelGrammar ---------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(value=level_values)
def test_topic_level_round_trip(value):
    encoded = TOPIC_LEVEL.encode(value)
    assert TOPIC_LEVEL.decode(encoded) == value
    assert "/" not in encoded
    assert "+" not in encoded
    assert "#" not in encoded


@settings(max_examples=400, deadline=None)
@given(value=level_values)
def test_nats_token_round_trip(value):
    encoded = NATS_TOKEN.encode(value)
    assert NATS_TOKEN.decode(encoded) == value
    assert "." not in encoded
    assert encoded != ""
    for c in " \t\r\n":
        assert c not in encoded


@settings(max_examples=1000, deadline=None)
@given(text=topic_level_texts)
def test_every_topic_level_text_reads_back_to_itself(text):
    """Decoding is one-to-one: no two texts read as the same value."""
    assert TOPIC_LEVEL.encode(TOPIC_LEVEL.decode(text)) == text


@settings(max_examples=1000, deadline=None)
@given(text=nats_tokens)
@example(text="%25zz")  # once read as "%zz", which is written "%zz"
@example(text="%2A")  # once the escape of a "*" level
def test_every_nats_token_reads_back_to_itself(text):
    assert NATS_TOKEN.encode(NATS_TOKEN.decode(text)) == text


@settings(max_examples=400, deadline=None)
@given(value=level_values)
@example(value="\x0b")  # vertical tab: str.isspace() is True (and str.strip() removes it)
@example(value="\x0c")  # form feed: white space for Python and for the NATS server
def test_nats_token_has_no_white_space(value):
    """No character that the NATS wire parser splits arguments on (bytes.split()) survives."""
    encoded = NATS_TOKEN.encode(value)
    assert len(encoded.encode("utf-8").split()) == 1, (value, encoded)


@pytest.mark.parametrize(
    "grammar, value, encoded",
    [
        (TOPIC_LEVEL, "a/b", "a%2Fb"),
        (TOPIC_LEVEL, "+", "%2B"),
        (TOPIC_LEVEL, "a#", "a%23"),
        (TOPIC_LEVEL, "", ""),
        (TOPIC_LEVEL, "50%", "50%"),
        (TOPIC_LEVEL, "%zz", "%zz"),
        (TOPIC_LEVEL, "%2F", "%252F"),
        (TOPIC_LEVEL, "%252F", "%25252F"),  # one more "25" for each literal level of "%"
        (TOPIC_LEVEL, "%25zz", "%25zz"),  # "%25" reads as "%" only where "%" needs it
        (TOPIC_LEVEL, "v1.2", "v1.2"),
        (NATS_TOKEN, "v1.2", "v1%2E2"),
        (NATS_TOKEN, "", "%00"),
        (NATS_TOKEN, "*", "*"),  # wildcard tokens are literal in publish subjects
        (NATS_TOKEN, ">", ">"),
        (NATS_TOKEN, "+", "+"),
        (NATS_TOKEN, "a*b", "a*b"),
        (NATS_TOKEN, "a b", "a%20b"),
        (NATS_TOKEN, "a/b", "a/b"),
        (NATS_TOKEN, "50%", "50%"),
        (NATS_TOKEN, "%2E", "%252E"),
        (NATS_TOKEN, "%00", "%2500"),  # a literal that would read as the empty level
        (NATS_TOKEN, "%2500", "%252500"),
        (NATS_TOKEN, "x%00", "x%00"),  # "%00" is the empty level only as a whole token
        (NATS_TOKEN, "%2A", "%2A"),  # no NATS escape
        (NATS_TOKEN, "%252E", "%25252E"),
        (NATS_TOKEN, "%.", "%%2E"),
        (NATS_TOKEN, "a%2Fb", "a%2Fb"),  # "%2F" is no NATS escape: passes through
        (TOPIC_LEVEL, "a%2Eb", "a%2Eb"),  # "%2E" is no topic escape
    ],
)
def test_encode_examples(grammar, value, encoded):
    assert grammar.encode(value) == encoded
    assert grammar.decode(encoded) == value


@pytest.mark.parametrize("grammar", [TOPIC_LEVEL, NATS_TOKEN])
def test_decode_leaves_unknown_percent_alone(grammar):
    assert grammar.decode("50%") == "50%"
    assert grammar.decode("%zz") == "%zz"
    assert grammar.decode("%2e") == "%2e"  # codes are upper case
    assert grammar.decode("%41") == "%41"  # not a listed escape
    assert grammar.decode("%2525") == "%2525"  # "%25" is "%" only before a code
    assert grammar.decode("%25zz") == "%25zz"


def test_each_grammar_decodes_only_its_own_escapes():
    assert TOPIC_LEVEL.decode("a%2Fb") == "a/b"
    assert NATS_TOKEN.decode("a%2Fb") == "a%2Fb"
    assert NATS_TOKEN.decode("a%2Eb") == "a.b"
    assert TOPIC_LEVEL.decode("a%2Eb") == "a%2Eb"
    assert NATS_TOKEN.decode("%2A") == "%2A"
    assert NATS_TOKEN.decode("%252E") == "%2E"
    assert TOPIC_LEVEL.decode("%252E") == "%252E"


@settings(max_examples=200, deadline=None)
@given(values=st.lists(level_values, min_size=1, max_size=5))
def test_topic_from_levels_inverse(values):
    topic = topic_from_levels(values)
    assert levels_of_topic(topic) == values
    assert not is_wildcard_filter(topic)


# --- NATS subjects <-> topics ---------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(subject=nats_subjects)
@example(subject="x.>")
@example(subject="a.*.b")
@example(subject="$KV.b.%25zz.%2A")
def test_every_subject_comes_back_byte_for_byte(subject):
    """NATS -> topic -> NATS is the identity for every publish subject."""
    topic = subject_to_topic(subject)
    assert len(levels_of_topic(topic)) == subject.count(".") + 1
    assert "+" not in topic and "#" not in topic  # a topic name ("%00" alone is its one empty level)
    assert topic_to_subject(topic) == subject.encode("utf-8")
    assert topic_to_subject(topic) == subject.encode("utf-8")  # again, from the memo
    if not set(subject.split(".")) & {"*", ">", "+"}:
        # A subject without wildcards is also a (literal) subscription filter for the same topic.
        assert filter_to_topic_filter(subject) == topic


@settings(max_examples=1000, deadline=None)
@given(topic=topic_names)
@example(topic="a//b")
@example(topic="a/%25zz/*")
def test_every_topic_name_comes_back_byte_for_byte(topic):
    """Topic (MQTT name) -> NATS -> topic is the identity too."""
    subject = topic_to_subject(topic)
    assert len(subject.split()) == 1 and subject.count(b".") == topic.count("/")
    assert subject_to_topic(subject) == topic


@settings(max_examples=400, deadline=None)
@given(values=st.lists(level_values, min_size=1, max_size=5))
@example(values=["x", "\x0b"])  # a level value that is white space for str.strip()
@example(values=["\xa0", "x"])
def test_topic_round_trip_through_subject(values):
    topic = topic_from_levels(values)
    subject = topic_to_subject(topic)
    assert isinstance(subject, bytes)
    assert subject_to_topic(subject.decode()) == topic


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.text(alphabet=st.characters(codec="utf-8").filter(lambda c: c in " \t\r\n" or not c.isspace())),
            st.sampled_from(TRICKY),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_topic_round_trip_through_subject_ascii_white_space(values):
    """The same round trip, with the white space limited to what NATS_TOKEN escapes."""
    topic = topic_from_levels(values)
    assert subject_to_topic(topic_to_subject(topic).decode()) == topic


@pytest.mark.parametrize(
    "subject, topic",
    [
        ("sensors.temperature", "sensors/temperature"),
        ("orders.eu.new", "orders/eu/new"),
        ("a/b", "a%2Fb"),
        ("x.a/b.c", "x/a%2Fb/c"),
        ("50%", "50%"),
        ("a#b", "a%23b"),
        ("fw.v1%2E2", "fw/v1.2"),
        ("a.%00.b", "a//b"),
        ("a*b.c>d", "a*b/c>d"),
    ],
)
def test_subject_to_topic_examples(subject, topic):
    assert subject_to_topic(subject) == topic
    assert subject_to_topic(subject) == topic  # again, from the memo


@pytest.mark.parametrize(
    "topic, subject",
    [
        ("sensors/temperature", b"sensors.temperature"),
        ("orders/eu/new", b"orders.eu.new"),
        ("fw/v1.2", b"fw.v1%2E2"),
        ("a//b", b"a.%00.b"),
        ("a%2Fb", b"a/b"),
        ("50%", b"50%"),
        ("a/b c", b"a.b%20c"),
        ("a/*/>", b"a.*.>"),
        ("a/%2B", b"a.+"),
        ("a/%25zz", b"a.%25zz"),
        ("a/%2500", b"a.%252500"),
        ("a/%00", b"a.%2500"),
    ],
)
def test_topic_to_subject_examples(topic, subject):
    assert topic_to_subject(topic) == subject
    assert topic_to_subject(topic) == subject  # again, from the memo


def test_mqtt_level_with_dot():
    topic = topic_from_levels(["fw", "v1.2"])
    assert topic == "fw/v1.2"
    assert topic_to_subject(topic) == b"fw.v1%2E2"
    assert subject_to_topic("fw.v1%2E2") == "fw/v1.2"


@pytest.mark.parametrize(
    "subject, topic_filter",
    [
        ("sensors.+.temperature", "sensors/+/temperature"),
        ("sensors.*.temperature", "sensors/+/temperature"),
        ("sensors.*", "sensors/+"),
        ("sensors.>", "sensors/+/#"),
        ("devices.+.+.status", "devices/+/+/status"),
        ("devices.*.+.>", "devices/+/+/+/#"),
        (">", "+/#"),
        ("*", "+"),
        ("orders.eu.new", "orders/eu/new"),
        ("a/b.*", "a%2Fb/+"),
        ("a.#", "a/%23"),
        ("a.*b", "a/*b"),
    ],
)
def test_filter_to_topic_filter_examples(subject, topic_filter):
    assert filter_to_topic_filter(subject) == topic_filter
    assert validate_filter(topic_filter) == topic_filter


def test_nats_full_wildcard_needs_at_least_one_level():
    router = Router()
    router.subscribe(Subscription(object(), filter_to_topic_filter("sensors.>")))
    assert not router.has_interest(subject_to_topic("sensors"))
    assert router.has_interest(subject_to_topic("sensors.a"))
    assert router.has_interest(subject_to_topic("sensors.a.b.c"))
    assert not router.has_interest(subject_to_topic("other.a"))


def nats_matches(filter_tokens, subject_tokens):
    """Naive NATS matching: '*' and '+' are one token, a final '>' is one or more tokens."""
    if filter_tokens and filter_tokens[-1] == ">":
        head = filter_tokens[:-1]
        return len(subject_tokens) > len(head) and nats_matches(head, subject_tokens[: len(head)])
    return len(filter_tokens) == len(subject_tokens) and all(
        f in ("*", "+") or f == t for f, t in zip(filter_tokens, subject_tokens)
    )


@settings(max_examples=200, deadline=None)
@given(
    filter_tokens=st.lists(st.sampled_from(["a", "b", "*", "+"]), max_size=3).flatmap(
        lambda tokens: st.sampled_from([tokens + [">"], tokens]).filter(bool)
    ),
    subjects=st.lists(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4), min_size=1, max_size=8),
)
def test_converted_filter_matches_like_nats(filter_tokens, subjects):
    router = Router()
    router.subscribe(Subscription(object(), filter_to_topic_filter(".".join(filter_tokens))))
    for tokens in subjects:
        expected = nats_matches(filter_tokens, tokens)
        assert router.has_interest(subject_to_topic(".".join(tokens))) is expected, (filter_tokens, tokens)


@pytest.mark.parametrize("subject", ["", "a..b", ".a", "a.", ".", "a b", " a", "a\t"])
def test_subject_to_topic_rejects(subject):
    with pytest.raises(InvalidTopic):
        subject_to_topic(subject)


@pytest.mark.parametrize("subject, topic", [("a.*", "a/*"), ("a.>", "a/>"), ("a.+", "a/%2B"), (">", ">")])
def test_wildcard_tokens_of_publish_subjects_are_literal_levels(subject, topic):
    """As nats-server outside pedantic mode; a '+' level is escaped in topics,
    and each is delivered as it was published."""
    assert subject_to_topic(subject) == topic
    assert topic_to_subject(topic) == subject.encode()
    assert not Router().has_interest(topic)


@pytest.mark.parametrize("subject", ["a.>.b", ">.a", "a..b", "", ".a", "a.", "a b"])
def test_filter_to_topic_filter_rejects(subject):
    with pytest.raises(InvalidTopic):
        filter_to_topic_filter(subject)


# --- validation -----------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a", "a/b", "a//b", "/", "/a", "a/", "50%", "a%2Bb", "a b", "a.b", "*", ">"])
def test_validate_topic_accepts(topic):
    assert validate_topic(topic) == topic


@pytest.mark.parametrize("topic", ["", "+", "#", "a/+", "a/#", "a+b", "a#", "+/a", "a/b#c"])
def test_validate_topic_rejects(topic):
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


@pytest.mark.parametrize(
    "topic_filter",
    ["a", "a/b", "+", "#", "a/+", "a/#", "#/a", "a/#/b", "+/+/#", "#/#", "a//b", "/", "a/%2B", "a.b"],
)
def test_validate_filter_accepts(topic_filter):
    assert validate_filter(topic_filter) == topic_filter


@pytest.mark.parametrize("topic_filter", ["", "a+", "a/b#", "+a/b", "a/#b", "++", "##", "a/+#", "a/b+/c"])
def test_validate_filter_rejects(topic_filter):
    with pytest.raises(InvalidTopic):
        validate_filter(topic_filter)


def test_is_wildcard_filter():
    assert is_wildcard_filter("a/+")
    assert is_wildcard_filter("#")
    assert is_wildcard_filter("a/#/b")
    assert not is_wildcard_filter("a/b")
    assert not is_wildcard_filter("a%2B/b")
