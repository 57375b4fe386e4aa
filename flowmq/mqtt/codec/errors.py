"""The codec's one exception family: what was wrong, as an MQTT 5 reason code.

Every error the decoder finds is a ``CodecError`` subclass whose
``reason_code`` is the MQTT 5 reason code the receiver reports (5.0 §4.13):
in a DISCONNECT, or in a CONNACK when the error is in the CONNECT. 3.1 and
3.1.1 have no reason codes: the server closes the connection (3.1.1 §4.8),
so there the class only tells the cause. ``reason`` is a short text for the
log (and a v5 Reason String, if the caller wants one).

The decoder stops at its first error, like the server closes the connection:

- ``packets``: the packets decoded before the error in the same ``feed()``
  call, which the caller still processes (they were well formed);
- ``connack_level``: None when no CONNACK may be sent (the error is not in
  the CONNECT, or came before the CONNECT's protocol level was known, or is
  one that 3.1.1 has no return code for). Otherwise the level whose CONNACK
  format to answer in, with ``connack_code``, before closing: 5 with the
  reason code (5.0 §4.13.1: "In the case of an error in a CONNECT packet it
  MAY send a CONNACK packet containing the Reason Code"), or 4 with 3.1.1
  return code 0x01 for an unsupported protocol level (3.1.1 MQTT-3.1.2-2).

``TopicFilterInvalid`` is never raised by the decoder: an invalid topic
filter in a SUBSCRIBE or UNSUBSCRIBE is answered per filter (SUBACK 0x8F in
v5, 0x80 in 3.1.1; UNSUBACK 0x8F), so the protocol layer checks each filter
with ``topics.py``, which raises it.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class: an input the codec rejects."""

    reason_code = 0x80  # Unspecified error
    return_code = None  # the 3.1/3.1.1 CONNACK return code, where there is one

    def __init__(self, reason: str, connack_level=None):
        super().__init__(reason)
        self.reason = reason
        self.connack_level = connack_level
        self.packets = []

    @property
    def connack_code(self):
        """The code of the CONNACK to send before closing (see ``connack_level``)."""
        return self.reason_code if self.connack_level == 5 else self.return_code


class MalformedPacket(CodecError):
    """The bytes cannot be parsed as the spec says (0x81)."""

    reason_code = 0x81


class ProtocolError(CodecError):
    """Parsed, but the protocol does not allow it (0x82)."""

    reason_code = 0x82


class UnsupportedProtocolVersion(CodecError):
    """A CONNECT for a protocol level other than 3, 4 or 5 (0x84; 3.1.1 return code 0x01)."""

    reason_code = 0x84
    return_code = 0x01


class TopicFilterInvalid(CodecError):
    """A topic filter that breaks MQTT-4.7.1 or 5.0 §4.8.2 (0x8F); a SUBACK or UNSUBACK reason."""

    reason_code = 0x8F


class TopicNameInvalid(CodecError):
    """A PUBLISH or Will topic name with a wildcard (MQTT-3.3.2-2) (0x90)."""

    reason_code = 0x90


class TopicAliasInvalid(CodecError):
    """A Topic Alias of 0 (5.0 §3.3.4: "the receiver uses DISCONNECT with 0x94") (0x94)."""

    reason_code = 0x94


class ReceiveMaximumExceeded(CodecError):
    """More QoS 1 and 2 PUBLISHes unanswered than the Receive Maximum (5.0 §3.3.4) (0x93).
    Raised by the protocol layer, which counts them; the decoder does not."""

    reason_code = 0x93


class PacketTooLarge(CodecError):
    """A packet bigger than the decoder's limit, rejected from its fixed header (0x95)."""

    reason_code = 0x95
