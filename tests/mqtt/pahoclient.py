"""paho-mqtt, the client MQTT users use, driven synchronously from a test.

``Paho(port, version)`` connects a paho ``Client`` (its network loop in its
own thread) and collects what it receives; each wait has a generous timeout
(CI machines are slow), never a fixed sleep where an event can be awaited.
"""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = (V311, V5)
TIMEOUT = 10.0


def stop_loop(client) -> None:
    """``client.loop_stop()`` where paho's network thread may end by itself
    meanwhile (after a DISCONNECT): paho 2.2's loop_stop reads the thread
    attribute three times and the ending thread sets it to None in between
    (AttributeError from ``None.join()``; paho issue 872). A thread that
    ended is stopped."""
    try:
        client.loop_stop()
    except AttributeError:
        pass


def properties(packet_type=PacketTypes.PUBLISH, **values) -> Properties:
    """paho Properties of ``packet_type`` with ``values`` (paho's names: UserProperty=[(k, v)], ...)."""
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class Paho:
    """One connected paho client; ``messages`` receives every PUBLISH it gets."""

    def __init__(self, port: int, version=V311, client_id: str = "", clean=True, connect_properties=None,
                 will=None, username=None, password=None, keepalive: int = 60, connect=True):
        self.version = version
        kwargs = {"client_id": client_id, "protocol": version}
        if version != V5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.connack = queue.Queue()
        self.disconnects = queue.Queue()
        self.subacks = queue.Queue()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_connect = lambda client, userdata, flags, reason, props: self.connack.put(
            (flags, reason, props))
        self.client.on_disconnect = lambda client, userdata, flags, reason, props: self.disconnects.put(reason)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, props: self.subacks.put((mid, reasons))
        self.unsubacks = queue.Queue()
        self.client.on_unsubscribe = lambda client, userdata, mid, reasons, props: self.unsubacks.put((mid, reasons))
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(**will)
        self.port = port
        self.flags = self.reason = self.connack_properties = None
        if connect:
            self.connect(clean, connect_properties, keepalive)

    def connect(self, clean=True, connect_properties=None, keepalive: int = 60):
        kwargs = {"keepalive": keepalive}
        if self.version == V5:
            kwargs["clean_start"] = clean
            kwargs["properties"] = connect_properties
        self.client.connect("127.0.0.1", self.port, **kwargs)
        self.client.loop_start()
        self.flags, self.reason, self.connack_properties = self.connack.get(timeout=TIMEOUT)
        return self

    def subscribe(self, topic, qos=0, options=None, props=None):
        """SUBSCRIBE and wait for the SUBACK; its reason codes."""
        if options is not None:
            result, mid = self.client.subscribe(topic, options=options, properties=props)
        else:
            result, mid = self.client.subscribe(topic, qos, properties=props)
        assert result == mqtt.MQTT_ERR_SUCCESS
        got_mid, reasons = self.subacks.get(timeout=TIMEOUT)
        assert got_mid == mid
        return reasons

    def unsubscribe(self, topic, props=None):
        """UNSUBSCRIBE and wait for the UNSUBACK; its reason codes (5.0)."""
        result, mid = self.client.unsubscribe(topic, properties=props)
        assert result == mqtt.MQTT_ERR_SUCCESS
        got_mid, reasons = self.unsubacks.get(timeout=TIMEOUT)
        assert got_mid == mid
        return reasons

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        """PUBLISH; for QoS 1 and 2, wait until the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos, retain, properties=props)
        if qos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
        return info

    def next(self, timeout=TIMEOUT):
        """The next message received."""
        return self.messages.get(timeout=timeout)

    def receive(self, count: int, timeout=TIMEOUT) -> list:
        return [self.next(timeout) for _ in range(count)]

    def nothing_more(self, wait: float = 0.5) -> bool:
        """True if nothing arrives within ``wait`` seconds (after the messages awaited)."""
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def disconnect(self, props=None):
        self.client.disconnect(properties=props)
        stop_loop(self.client)
        sock = self.client.socket()
        if sock is not None:  # paho's loop may stop before it closes the socket: a TLS close would wait for it
            sock.close()

    def drop(self):
        """The network connection ends without DISCONNECT (the Will goes)."""
        sock = self.client.socket()
        if sock is not None:  # paho closed it already after a refused CONNACK
            sock.close()
        stop_loop(self.client)


def wait_until(predicate, timeout=TIMEOUT, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()

