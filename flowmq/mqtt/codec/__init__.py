"""The MQTT packet codec: pure (no Twisted, no I/O, no broker), for MQTT 3.1
(level 3), 3.1.1 (level 4) and 5.0 (level 5).

The protocol layer feeds a connection's bytes to a ``Decoder`` and gets
packet objects (``packets.py``) back; it writes packets with
``encode(packet, level)`` and the broker's fan-out with ``encode_publish``.
Errors are one family (``errors.py``), each with its MQTT 5 reason code.

Modules, one job each: ``primitives`` (the data types), ``properties`` (the
27 MQTT 5 properties), ``reasons`` (reason and return codes), ``packets``
(the value classes), ``topics`` (topic names, filters, ``$share``),
``bodies`` (each packet's variable header and payload), ``decode`` (the
stream: framing, limits, order), ``encode``. docs/ARCHITECTURE.md ("MQTT", "The codec")
tells the decisions.
"""

from .decode import DEFAULT_MAX_CONNECT_SIZE, DEFAULT_MAX_PACKET_SIZE, MAX_PACKET_SIZE, Decoder
from .encode import encode, encode_publish, publish_head
from .errors import (CodecError, MalformedPacket, PacketTooLarge, ProtocolError, TopicAliasInvalid,
                     TopicFilterInvalid, TopicNameInvalid, UnsupportedProtocolVersion)
from .packets import (NO_PROPERTIES, Auth, Connack, Connect, Disconnect, Pingreq, Pingresp, Puback, Pubcomp,
                      Publish, Pubrec, Pubrel, Suback, Subscribe, SubscriptionOptions, Unsuback, Unsubscribe, Will)
from .properties import encode_properties, encode_property_list, property_block

__all__ = [
    "DEFAULT_MAX_CONNECT_SIZE", "DEFAULT_MAX_PACKET_SIZE", "MAX_PACKET_SIZE", "Decoder",
    "encode", "encode_publish", "publish_head", "encode_properties", "encode_property_list", "property_block",
    "CodecError", "MalformedPacket", "PacketTooLarge", "ProtocolError", "TopicAliasInvalid", "TopicFilterInvalid",
    "TopicNameInvalid", "UnsupportedProtocolVersion",
    "NO_PROPERTIES", "Auth", "Connack", "Connect", "Disconnect", "Pingreq", "Pingresp", "Puback", "Pubcomp",
    "Publish", "Pubrec", "Pubrel", "Suback", "Subscribe", "SubscriptionOptions", "Unsuback", "Unsubscribe", "Will",
]
