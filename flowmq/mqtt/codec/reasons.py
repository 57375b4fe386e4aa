"""MQTT reason codes: every MQTT 5 reason code with its name and the packets
that may carry it (5.0 §2.4, Table 2-6), the 3.1.1 CONNACK return codes
(3.1.1 §3.2.2.3) and the 3.1.1 SUBACK failure code (3.1.1 §3.9.3).

The decoder rejects a reason code that the packet may not carry as a
Protocol Error: the sender "MUST use one of the ... Reason Codes"
(MQTT-3.4.2-1, -3.5.2-1, -3.6.2-1, -3.7.2-1, -3.2.2-8, -3.9.3-2, -3.11.3-2,
-3.14.2-1, -3.15.2-1), and 5.0 §1.2 calls data the protocol does not allow a
Protocol Error.
"""

from __future__ import annotations

from .packets import (AUTH, CONNACK, DISCONNECT, PUBACK, PUBCOMP, PUBREC, PUBREL, SUBACK, UNSUBACK)

SUCCESS = NORMAL_DISCONNECTION = GRANTED_QOS_0 = 0x00
GRANTED_QOS_1 = 0x01
GRANTED_QOS_2 = 0x02
DISCONNECT_WITH_WILL_MESSAGE = 0x04
NO_MATCHING_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11
CONTINUE_AUTHENTICATION = 0x18
RE_AUTHENTICATE = 0x19
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
UNSUPPORTED_PROTOCOL_VERSION = 0x84
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
SERVER_BUSY = 0x89
BANNED = 0x8A
SERVER_SHUTTING_DOWN = 0x8B
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_IDENTIFIER_IN_USE = 0x91
PACKET_IDENTIFIER_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
MESSAGE_RATE_TOO_HIGH = 0x96
QUOTA_EXCEEDED = 0x97
ADMINISTRATIVE_ACTION = 0x98
PAYLOAD_FORMAT_INVALID = 0x99
RETAIN_NOT_SUPPORTED = 0x9A
QOS_NOT_SUPPORTED = 0x9B
USE_ANOTHER_SERVER = 0x9C
SERVER_MOVED = 0x9D
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
CONNECTION_RATE_EXCEEDED = 0x9F
MAXIMUM_CONNECT_TIME = 0xA0
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

_ERROR_ACKS = (CONNACK, PUBACK, PUBREC, SUBACK, UNSUBACK, DISCONNECT)

# (code, name, packets that may carry it): 5.0 Table 2-6, row by row.
_TABLE = (
    (0x00, "Success", (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH)),
    (0x00, "Normal disconnection", (DISCONNECT,)),
    (0x00, "Granted QoS 0", (SUBACK,)),
    (0x01, "Granted QoS 1", (SUBACK,)),
    (0x02, "Granted QoS 2", (SUBACK,)),
    (0x04, "Disconnect with Will Message", (DISCONNECT,)),
    (0x10, "No matching subscribers", (PUBACK, PUBREC)),
    (0x11, "No subscription existed", (UNSUBACK,)),
    (0x18, "Continue authentication", (AUTH,)),
    (0x19, "Re-authenticate", (AUTH,)),
    (0x80, "Unspecified error", _ERROR_ACKS),
    (0x81, "Malformed Packet", (CONNACK, DISCONNECT)),
    (0x82, "Protocol Error", (CONNACK, DISCONNECT)),
    (0x83, "Implementation specific error", _ERROR_ACKS),
    (0x84, "Unsupported Protocol Version", (CONNACK,)),
    (0x85, "Client Identifier not valid", (CONNACK,)),
    (0x86, "Bad User Name or Password", (CONNACK,)),
    (0x87, "Not authorized", _ERROR_ACKS),
    (0x88, "Server unavailable", (CONNACK,)),
    (0x89, "Server busy", (CONNACK, DISCONNECT)),
    (0x8A, "Banned", (CONNACK,)),
    (0x8B, "Server shutting down", (DISCONNECT,)),
    (0x8C, "Bad authentication method", (CONNACK, DISCONNECT)),
    (0x8D, "Keep Alive timeout", (DISCONNECT,)),
    (0x8E, "Session taken over", (DISCONNECT,)),
    (0x8F, "Topic Filter invalid", (SUBACK, UNSUBACK, DISCONNECT)),
    (0x90, "Topic Name invalid", (CONNACK, PUBACK, PUBREC, DISCONNECT)),
    (0x91, "Packet Identifier in use", (PUBACK, PUBREC, SUBACK, UNSUBACK)),
    (0x92, "Packet Identifier not found", (PUBREL, PUBCOMP)),
    (0x93, "Receive Maximum exceeded", (DISCONNECT,)),
    (0x94, "Topic Alias invalid", (DISCONNECT,)),
    (0x95, "Packet too large", (CONNACK, DISCONNECT)),
    (0x96, "Message rate too high", (DISCONNECT,)),
    (0x97, "Quota exceeded", (CONNACK, PUBACK, PUBREC, SUBACK, DISCONNECT)),
    (0x98, "Administrative action", (DISCONNECT,)),
    (0x99, "Payload format invalid", (CONNACK, PUBACK, PUBREC, DISCONNECT)),
    (0x9A, "Retain not supported", (CONNACK, DISCONNECT)),
    (0x9B, "QoS not supported", (CONNACK, DISCONNECT)),
    (0x9C, "Use another server", (CONNACK, DISCONNECT)),
    (0x9D, "Server moved", (CONNACK, DISCONNECT)),
    (0x9E, "Shared Subscriptions not supported", (SUBACK, DISCONNECT)),
    (0x9F, "Connection rate exceeded", (CONNACK, DISCONNECT)),
    (0xA0, "Maximum connect time", (DISCONNECT,)),
    (0xA1, "Subscription Identifiers not supported", (SUBACK, DISCONNECT)),
    (0xA2, "Wildcard Subscriptions not supported", (SUBACK, DISCONNECT)),
)

#: MQTT 5: packet type -> frozenset of the reason codes it may carry.
ALLOWED = {}
#: MQTT 5: (packet type, code) -> the code's name in that packet.
NAMES = {}
for _code, _name, _packets in _TABLE:
    for _packet in _packets:
        ALLOWED.setdefault(_packet, set()).add(_code)
        NAMES[_packet, _code] = _name
ALLOWED = {packet: frozenset(codes) for packet, codes in ALLOWED.items()}
del _code, _name, _packets, _packet

#: 3.1.1 CONNACK return codes (3.1.1 Table 3.1); 6-255 are reserved.
CONNACK_RETURN_CODES = {
    0x00: "Connection Accepted",
    0x01: "Connection Refused, unacceptable protocol version",
    0x02: "Connection Refused, identifier rejected",
    0x03: "Connection Refused, Server unavailable",
    0x04: "Connection Refused, bad user name or password",
    0x05: "Connection Refused, not authorized",
}

#: The 3.1.1 SUBACK return code for a refused subscription (3.1.1 §3.9.3).
SUBACK_FAILURE = 0x80
#: What a 3.1/3.1.1 SUBACK may carry: a granted QoS or the failure code.
SUBACK_RETURN_CODES = frozenset((0x00, 0x01, 0x02, SUBACK_FAILURE))


def reason_name(packet_type: int, code: int) -> str:
    """The MQTT 5 name of ``code`` in a packet of ``packet_type`` ("0x%02X" when it has none there)."""
    return NAMES.get((packet_type, code), "0x%02X" % code)
