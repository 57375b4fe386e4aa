"""MQTT topic names, topic filters and ``$share/<group>/<filter>`` (5.0 §4.7, §4.8.2)."""

from __future__ import annotations

import pytest

from flowmq.mqtt.codec import TopicFilterInvalid, TopicNameInvalid
from flowmq.mqtt.codec.topics import parse_topic_filter, topic_filter_error, validate_topic_name

VALID_NAMES = ["a", "/", "a/b", "/finance", "finance/", "a//b", "Accounts payable", "$SYS/monitor", "ü/€/𝄞",
               "x" * 65535]
INVALID_NAMES = ["", "a/+", "+", "a/#", "#", "sport+", "a\x00b", "€" * 21846]


@pytest.mark.parametrize("name", VALID_NAMES, ids=range(len(VALID_NAMES)))
def test_valid_topic_names(name):
    assert validate_topic_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES, ids=range(len(INVALID_NAMES)))
def test_invalid_topic_names(name):
    with pytest.raises(TopicNameInvalid) as caught:
        validate_topic_name(name)
    assert caught.value.reason_code == 0x90


# MQTT-4.7.1-2, -4.7.1-3 and the spec's examples (5.0 §4.7.1.2, §4.7.1.3).
VALID_FILTERS = ["#", "+", "sport/tennis/player1/#", "sport/#", "+/tennis/#", "sport/+/player1", "+/+", "/+",
                 "a/b", "/", "//", "$SYS/#", "+/monitor/Clients", "$share", "$sharex/a", "a/$share/b"]
INVALID_FILTERS = ["", "sport/tennis#", "sport/tennis/#/ranking", "#/a", "sport+", "a/+b", "a/b+/c", "##",
                   "a\x00"]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS, ids=range(len(VALID_FILTERS)))
def test_valid_filters(topic_filter):
    assert topic_filter_error(topic_filter) is None
    assert parse_topic_filter(topic_filter) == (None, topic_filter)


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS, ids=range(len(INVALID_FILTERS)))
def test_invalid_filters(topic_filter):
    assert topic_filter_error(topic_filter) is not None
    with pytest.raises(TopicFilterInvalid) as caught:
        parse_topic_filter(topic_filter)
    assert caught.value.reason_code == 0x8F


@pytest.mark.parametrize("topic_filter, expected", [
    ("$share/consumer1/sport/tennis/+", ("consumer1", "sport/tennis/+")),
    ("$share/consumer1//finance", ("consumer1", "/finance")),  # 5.0 §4.8.2's example
    ("$share/g/#", ("g", "#")),
    ("$share/g/$share/x", ("g", "$share/x")),
])
def test_shared_subscription_filters(topic_filter, expected):
    assert parse_topic_filter(topic_filter) == expected


@pytest.mark.parametrize("topic_filter", [
    "$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a", "$share/g/a#", "$share/a\x00/b",
])
def test_invalid_shared_subscription_filters(topic_filter):
    """MQTT-4.8.2-1: a ShareName of at least one character; MQTT-4.8.2-2: no '/', '+', '#' in it, then '/'
    and a valid topic filter."""
    with pytest.raises(TopicFilterInvalid):
        parse_topic_filter(topic_filter)
