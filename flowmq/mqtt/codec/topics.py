"""MQTT topic names, topic filters and shared-subscription filters (5.0 §4.7, §4.8.2).

- A topic name (PUBLISH, Will, Response Topic) is at least one character
  (MQTT-4.7.3-1), holds no wildcard (MQTT-3.3.2-2) and no U+0000
  (MQTT-4.7.3-2), and encodes to at most 65,535 bytes (MQTT-4.7.3-3).
- A topic filter follows the same rules except that ``+`` may stand as a
  whole level (MQTT-4.7.1-3) and ``#`` as the whole last level (MQTT-4.7.1-2).
- ``$share/<ShareName>/<filter>`` is a shared subscription: the ShareName is
  at least one character without ``/``, ``+`` or ``#`` and the filter after
  it is a valid topic filter (MQTT-4.8.2-1, MQTT-4.8.2-2). A filter that starts
  with ``$share/`` is always read as one, at every protocol level (3.1.1 has
  no shared subscriptions, but brokers accept them there too); ``$share``
  without the slash is an ordinary filter.

Topics arrive as str (the decoder has already checked the UTF-8).
The decoder applies ``topic_name_error`` to PUBLISH and Will topics; an
invalid filter is answered per filter in SUBACK/UNSUBACK, so the protocol
layer calls ``parse_topic_filter``, which raises ``TopicFilterInvalid``.
"""

from __future__ import annotations

from .errors import TopicFilterInvalid, TopicNameInvalid

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
SHARE_PREFIX = "$share/"

_MAX_BYTES = 65535
_MAX_CHARS_UNCHECKED = _MAX_BYTES // 4  # a str this short cannot encode past the limit


def _too_long(text: str) -> bool:
    return len(text) > _MAX_CHARS_UNCHECKED and len(text.encode("utf-8", "surrogatepass")) > _MAX_BYTES


def topic_name_error(name: str):
    """Why ``name`` is not a valid topic name, or None when it is."""
    if not name:
        return "empty topic name (MQTT-4.7.3-1)"
    if SINGLE_LEVEL in name or MULTI_LEVEL in name:
        return "wildcard in topic name (MQTT-3.3.2-2)"
    if "\x00" in name:
        return "U+0000 in topic name (MQTT-4.7.3-2)"
    if _too_long(name):
        return "topic name longer than 65535 bytes (MQTT-4.7.3-3)"
    return None


def validate_topic_name(name: str) -> str:
    """Return ``name`` if it is a valid topic name, else raise TopicNameInvalid."""
    error = topic_name_error(name)
    if error is not None:
        raise TopicNameInvalid(error)
    return name


def topic_filter_error(topic_filter: str):
    """Why ``topic_filter`` (not a shared one) is not a valid topic filter, or None."""
    if not topic_filter:
        return "empty topic filter (MQTT-4.7.3-1)"
    if "\x00" in topic_filter:
        return "U+0000 in topic filter (MQTT-4.7.3-2)"
    if _too_long(topic_filter):
        return "topic filter longer than 65535 bytes (MQTT-4.7.3-3)"
    if SINGLE_LEVEL not in topic_filter and MULTI_LEVEL not in topic_filter:
        return None
    levels = topic_filter.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if MULTI_LEVEL in level:
            if level != MULTI_LEVEL or index != last:
                return "'#' not alone in the last level (MQTT-4.7.1-2)"
        elif SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            return "'+' not alone in its level (MQTT-4.7.1-3)"
    return None


def parse_topic_filter(topic_filter: str):
    """Check a SUBSCRIBE/UNSUBSCRIBE filter; return ``(share_name, filter)``.

    ``share_name`` is None for an ordinary filter, which comes back as it is;
    for ``$share/<name>/<filter>`` it is the ShareName and ``filter`` the part
    after it. Raises TopicFilterInvalid.
    """
    share_name = None
    if topic_filter.startswith(SHARE_PREFIX):
        share_name, slash, topic_filter = topic_filter[len(SHARE_PREFIX):].partition(SEPARATOR)
        if not share_name:
            raise TopicFilterInvalid("empty ShareName (MQTT-4.8.2-1)")
        if not slash:
            raise TopicFilterInvalid("ShareName not followed by '/' (MQTT-4.8.2-2)")
        if SINGLE_LEVEL in share_name or MULTI_LEVEL in share_name:
            raise TopicFilterInvalid("wildcard in ShareName (MQTT-4.8.2-2)")
        if "\x00" in share_name:
            raise TopicFilterInvalid("U+0000 in ShareName (MQTT-4.7.3-2)")
    error = topic_filter_error(topic_filter)
    if error is not None:
        raise TopicFilterInvalid(error)
    return share_name, topic_filter
