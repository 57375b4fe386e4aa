"""A JetStream stream and the whole message: sizes count the header block a
NATS client gets (headers and the lines of the properties), de-duplication
sees the message id of any protocol, and typed header values (another
protocol's, or a NATS publish's ``FlowMQ-Types`` line) get the rules' own
errors, never an exception. Raw sockets for the NATS side; a message with
Properties comes from an in-process publish (no other protocol exists yet)."""

from __future__ import annotations

import base64
import json

import pytest
from twisted.logger import globalLogPublisher

from flowmq.core.message import Message, Properties
from flowmq.core.values import encode_value
from tests.conftest import RawClient

INBOX = b"_INBOX.t"


def read_frame(client):
    """``(subject, reply, header block, payload)`` of the next MSG or HMSG."""
    line = client.read_line().split()
    if line[0] == b"HMSG":
        header_len, total = int(line[-2]), int(line[-1])
        reply = line[3] if len(line) == 6 else None
    else:
        assert line[0] == b"MSG", line
        header_len, total = 0, int(line[-1])
        reply = line[3] if len(line) == 5 else None
    data = client.read_exact(total + 2)
    return line[1], reply, data[:header_len], data[header_len:total]


def request(client, subject: bytes, body: bytes, headers: bytes = None):
    """Publish with INBOX as reply subject (HPUB with ``headers``), read the answer."""
    if headers is None:
        client.send(b"PUB %s %s %d\r\n%s\r\n" % (subject, INBOX, len(body), body))
    else:
        client.send(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject, INBOX, len(headers), len(headers) + len(body), headers, body))
    return read_frame(client)


def api(client, subject: bytes, document: dict) -> dict:
    return json.loads(request(client, subject, json.dumps(document).encode())[3])


def connect(broker):
    client = RawClient(broker.port, timeout=20)
    client.handshake()
    client.subscribe(INBOX, b"99")
    return client


def create_stream(client, **config):
    config = dict({"name": "S", "subjects": ["s.>"]}, **config)
    answer = api(client, b"$JS.API.STREAM.CREATE.S", config)
    assert "error" not in answer, answer
    return answer


def stream_state(client) -> dict:
    return api(client, b"$JS.API.STREAM.INFO.S", {})["state"]


def publish_in_process(broker, message) -> None:
    broker.call(broker.service.broker.publish, message)


@pytest.fixture
def failures():
    """The events logged at failure level (a traceback) meanwhile."""
    events = []

    def observe(event):
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


# -- sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_stream_bytes_and_pull_max_bytes_count_the_block_with_the_properties(broker, storage):
    """A message with Properties goes to NATS clients with a header block of
    its property lines: STREAM.INFO's bytes are nats-server's formula over
    that block, and a pull whose max_bytes is one byte short of the
    delivery does not get it."""
    client = connect(broker)
    create_stream(client, storage=storage)
    client.subscribe(b"s.a", b"1")
    payload = b"hello"
    publish_in_process(broker, Message("s/a", payload, properties=Properties(message_id="m-1", priority=3,
                                                                              app_id="billing")))
    subject, _, block, body = read_frame(client)
    assert subject == b"s.a" and body == payload and b"FlowMQ-App-Id: billing" in block
    if storage == "file":  # nats-server's fileStoreMsgSize and memStoreMsgSize
        expected = 22 + len(b"s.a") + 4 + len(block) + len(payload) + 8
    else:
        expected = len(b"s.a") + len(block) + len(payload) + 16
    assert stream_state(client)["bytes"] == expected

    for name in ("C1", "C2"):  # names of one length: their deliveries have one size
        answer = api(client, b"$JS.API.CONSUMER.DURABLE.CREATE.S." + name.encode(),
                     {"stream_name": "S", "config": {"durable_name": name, "ack_policy": "explicit"}})
        assert "error" not in answer, answer
    subject, reply, got, _ = request(client, b"$JS.API.CONSUMER.MSG.NEXT.S.C1", b'{"batch":1,"no_wait":true}')
    assert subject == b"s.a" and got == block
    size = len(subject) + len(reply) + len(block) + len(payload)  # what nats-server counts of a delivery
    short = b'{"batch":1,"no_wait":true,"max_bytes":%d}' % (size - 1)
    _, _, status, _ = request(client, b"$JS.API.CONSUMER.MSG.NEXT.S.C2", short)
    assert status.startswith(b"NATS/1.0 409 Message Size Exceeds MaxBytes"), status
    exact = b'{"batch":1,"no_wait":true,"max_bytes":%d}' % size
    subject, reply, got, body = request(client, b"$JS.API.CONSUMER.MSG.NEXT.S.C2", exact)
    assert (subject, got, body) == (b"s.a", block, payload) and reply.startswith(b"$JS.ACK.S.C2.")
    client.close()


def test_max_msg_size_counts_the_property_lines(broker):
    client = connect(broker)
    client.subscribe(b"s.a", b"1")
    create_stream(client, max_msg_size=1000)
    publish_in_process(broker, Message("s/a", b"x" * 900, properties=Properties(app_id="y" * 200)))
    publish_in_process(broker, Message("s/a", b"x" * 900, properties=Properties(app_id="y")))
    sizes = [len(read_frame(client)[2]) + 900 for _ in range(2)]
    assert sizes[0] > 1000 >= sizes[1]
    assert stream_state(client)["messages"] == 1  # the first is too big with its block
    client.close()


# -- de-duplication ---------------------------------------------------------------


def test_a_message_id_from_another_protocol_is_deduplicated_and_expected(start_broker):
    """Properties(message_id=...) is the id de-duplication and
    Nats-Expected-Last-Msg-Id see, also once the window is read back from
    the store after a restart."""
    broker = start_broker()
    client = connect(broker)
    create_stream(client)
    for _ in range(2):
        publish_in_process(broker, Message("s/a", b"once", properties=Properties(message_id="x")))
    assert stream_state(client)["messages"] == 1
    answer = json.loads(request(client, b"s.b", b"next", b"NATS/1.0\r\nNats-Expected-Last-Msg-Id: x\r\n\r\n")[3])
    assert answer == {"stream": "S", "seq": 2}
    client.close()
    broker.stop()

    broker = start_broker()  # the same data directory
    client = connect(broker)
    publish_in_process(broker, Message("s/a", b"once", properties=Properties(message_id="x")))
    assert stream_state(client)["messages"] == 2
    answer = json.loads(request(client, b"s.a", b"again", b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n")[3])
    assert answer == {"stream": "S", "seq": 1, "duplicate": True}
    client.close()


# -- typed header values ------------------------------------------------------------


def _error(client, headers: bytes) -> dict:
    return json.loads(request(client, b"s.a", b"m", headers)[3]).get("error")


def test_typed_header_values_get_the_rules_own_errors(broker, failures):
    client = connect(broker)
    create_stream(client, allow_rollup_hdrs=True)
    null_sequence = b"NATS/1.0\r\nNats-Expected-Last-Sequence: \r\nFlowMQ-Types: 0n\r\n\r\n"
    assert _error(client, null_sequence)["err_code"] == 10003  # bad request, as a text that is no number
    null_subject_sequence = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: \r\nFlowMQ-Types: 0n\r\n\r\n"
    assert _error(client, null_subject_sequence)["err_code"] == 10003
    bytes_rollup = b"NATS/1.0\r\nNats-Rollup: sub\r\nFlowMQ-Types: 0b\r\n\r\n"
    error = _error(client, bytes_rollup)
    assert error["err_code"] == 10111 and "rollup value invalid" in error["description"]
    bytes_stream = b"NATS/1.0\r\nNats-Expected-Stream: S\r\nFlowMQ-Types: 0b\r\n\r\n"
    assert _error(client, bytes_stream)["err_code"] == 10060
    bytes_last_id = b"NATS/1.0\r\nNats-Expected-Last-Msg-Id: \r\nFlowMQ-Types: 0b\r\n\r\n"
    assert _error(client, bytes_last_id)["err_code"] == 10070
    table = base64.b64encode(encode_value({"a": 1}))
    dict_id = b"NATS/1.0\r\nNats-Msg-Id: %s\r\nFlowMQ-Types: 0F\r\n\r\n" % table
    first = json.loads(request(client, b"s.a", b"m", dict_id)[3])
    second = json.loads(request(client, b"s.a", b"m", dict_id)[3])
    assert "error" not in first and second["seq"] == first["seq"] + 1  # no id to de-duplicate on
    assert stream_state(client)["messages"] == 2
    client.send(b"PING\r\n")
    assert client.read_line() == b"PONG"
    assert failures == []
    client.close()
