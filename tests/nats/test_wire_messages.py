"""Wire scripts of NATS messaging: SUB, PUB -> MSG, HPUB -> HMSG, UNSUB, queue
groups and the errors of bad publishes (bytes in, bytes out: tests/wire.py)."""

from __future__ import annotations

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'


def _connected(broker):
    client = broker.connect("nats")
    client.take()
    client.send(CONNECT)
    return client


def test_pub_to_a_subscription_is_a_msg(wire):
    broker = wire()
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB greet.* 7\r\n")
    publisher.send(b"PUB greet.joe 5\r\nhello\r\n")
    assert subscriber.take() == b"MSG greet.joe 7 5\r\nhello\r\n"
    assert publisher.take() == b""


def test_pub_with_a_reply_subject(wire):
    broker = wire()
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB service 1\r\n")
    publisher.send(b"PUB service _INBOX.abc 2\r\nhi\r\n")
    assert subscriber.take() == b"MSG service 1 _INBOX.abc 2\r\nhi\r\n"


def test_a_publisher_gets_its_own_message_unless_echo_is_off(wire):
    broker = wire()
    client = _connected(broker)
    client.send(b"SUB me 1\r\nPUB me 1\r\nx\r\n")
    assert client.take() == b"MSG me 1 1\r\nx\r\n"
    quiet = broker.connect("nats")
    quiet.take()
    quiet.send(b'CONNECT {"verbose":false,"echo":false}\r\nSUB me 1\r\nPUB me 1\r\ny\r\nPING\r\n')
    assert quiet.take() == b"PONG\r\n"
    assert client.take() == b"MSG me 1 1\r\ny\r\n"


def test_hpub_is_an_hmsg_to_a_headers_client_and_a_msg_to_others(wire):
    broker = wire()
    headers_client, plain = _connected(broker), broker.connect("nats")
    plain.take()
    plain.send(b'CONNECT {"verbose":false}\r\nSUB h 2\r\n')
    headers_client.send(b"SUB h 1\r\n")
    block = b"NATS/1.0\r\nA: b\r\n\r\n"
    publisher = _connected(broker)
    publisher.send(b"HPUB h %d %d\r\n%sdata\r\n" % (len(block), len(block) + 4, block))
    assert headers_client.take() == b"HMSG h 1 %d %d\r\n%sdata\r\n" % (len(block), len(block) + 4, block)
    assert plain.take() == b"MSG h 2 4\r\ndata\r\n"


def test_hpub_without_headers_in_connect_is_an_error(wire):
    client = wire().connect("nats")
    client.take()
    client.send(b'CONNECT {"verbose":false}\r\nHPUB h 12 12\r\nNATS/1.0\r\n\r\n\r\n')
    assert client.take() == b"-ERR 'message headers not supported'\r\n"
    assert client.closing


def test_unsub_with_a_limit_stops_after_it(wire):
    broker = wire()
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB n 1\r\nUNSUB 1 2\r\n")
    publisher.send(b"PUB n 1\r\na\r\nPUB n 1\r\nb\r\nPUB n 1\r\nc\r\n")
    assert subscriber.take() == b"MSG n 1 1\r\na\r\nMSG n 1 1\r\nb\r\n"


def test_a_queue_group_gets_each_message_once(wire):
    broker = wire()
    members = [_connected(broker) for _ in range(3)]
    for member in members:
        member.send(b"SUB work workers 1\r\n")
    publisher = _connected(broker)
    publisher.send(b"".join(b"PUB work 1\r\n%d\r\n" % (i % 10) for i in range(30)))
    frames = sum(member.take().count(b"MSG work 1 1\r\n") for member in members)
    assert frames == 30


def test_verbose_publish_is_acknowledged_before_its_delivery(wire):
    client = wire().connect("nats")
    client.take()
    client.send(b'CONNECT {"verbose":true,"pedantic":false}\r\n')
    assert client.take() == b"+OK\r\n"
    client.send(b"SUB v 1\r\nPUB v 1\r\nz\r\n")
    assert client.take() == b"+OK\r\n+OK\r\nMSG v 1 1\r\nz\r\n"


def test_payload_over_max_payload_is_an_error_and_closes(wire):
    broker = wire(**{"nats.max_payload": 8})
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB big 1\r\n")
    publisher.send(b"PUB big 9\r\n123456789\r\n")
    assert publisher.take() == b"-ERR 'Maximum Payload Violation'\r\n"
    assert publisher.closing
    assert subscriber.take() == b""


def test_invalid_subject_in_sub_is_an_error_and_the_connection_stays(wire):
    client = _connected(wire())
    client.send(b"SUB a..b 1\r\nPING\r\n")
    assert client.take() == b"-ERR 'Invalid Subject'\r\nPONG\r\n"
    assert not client.closing
