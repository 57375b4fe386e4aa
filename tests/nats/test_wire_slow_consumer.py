"""Wire scripts of the slow-consumer rules of flowmq.connection, as a NATS
client sees them: time on a task.Clock, the client's reading simulated by the
transport (tests/wire.py), no sockets and no sleeps."""

from __future__ import annotations

CONNECT = b'CONNECT {"verbose":false,"pedantic":false}\r\n'
SLOW = b"-ERR 'Slow Consumer'\r\n"


def _pair(broker):
    subscriber, publisher = broker.connect("nats"), broker.connect("nats")
    for client in (subscriber, publisher):
        client.take()
        client.send(CONNECT)
    subscriber.send(b"SUB s 1\r\n")
    return subscriber, publisher


def test_a_client_that_takes_nothing_is_cut_off_after_the_stall_deadline(wire):
    subscriber, publisher = _pair(wire(**{"nats.stall_deadline": 2.0}))
    subscriber.stop_reading()
    publisher.send(b"PUB s 3\r\nabc\r\n")
    subscriber.advance(1.8)
    assert subscriber.take() == b"" and not subscriber.closing
    subscriber.advance(0.4)
    assert subscriber.take() == SLOW
    assert subscriber.closing
    assert not publisher.closing


def test_a_client_that_reads_again_in_time_gets_its_messages(wire):
    subscriber, publisher = _pair(wire(**{"nats.stall_deadline": 2.0}))
    subscriber.stop_reading()
    publisher.send(b"PUB s 3\r\nabc\r\nPUB s 3\r\ndef\r\n")
    subscriber.advance(1.5)
    assert subscriber.take() == b""
    subscriber.resume_reading()
    assert subscriber.take() == b"MSG s 1 3\r\nabc\r\nMSG s 1 3\r\ndef\r\n"
    subscriber.advance(5)
    assert not subscriber.closing


def test_more_than_max_pending_waiting_is_cut_off_at_once(wire):
    broker = wire(**{"nats.max_pending": 1000})
    subscriber, publisher = _pair(broker)
    other = broker.connect("nats")  # the first publisher is held back after its message: another one
    other.take()
    other.send(CONNECT)
    subscriber.stop_reading()
    payload = b"x" * 600
    publisher.send(b"PUB s 600\r\n%s\r\n" % payload)
    assert not subscriber.closing
    other.send(b"PUB s 600\r\n%s\r\n" % payload)
    assert subscriber.take() == SLOW
    assert subscriber.closing


def test_a_client_that_takes_data_but_cannot_keep_up_is_cut_off_at_the_write_deadline(wire):
    subscriber, publisher = _pair(wire(**{"nats.write_deadline": 5.0, "nats.stall_deadline": 2.0}))
    subscriber.stop_reading()
    publisher.send(b"PUB s 3\r\nabc\r\n")
    for _ in range(48):  # it takes a little every tick: never stalled, still backed up
        subscriber.acknowledge(10)
        subscriber.advance(0.1)
    assert subscriber.take() == b"" and not subscriber.closing
    for _ in range(4):
        subscriber.acknowledge(10)
        subscriber.advance(0.1)
    assert subscriber.take() == SLOW
    assert subscriber.closing


def test_a_cut_off_client_that_does_not_take_its_last_bytes_is_aborted(wire):
    subscriber, publisher = _pair(wire(**{"nats.write_deadline": 3.0, "nats.stall_deadline": 1.0}))
    subscriber.stop_reading()
    publisher.send(b"PUB s 3\r\nabc\r\n")
    subscriber.advance(1.1)
    assert subscriber.closing and not subscriber.transport.aborted
    subscriber.advance(2.8)
    assert not subscriber.transport.aborted
    subscriber.advance(0.3)
    assert subscriber.transport.aborted


def test_a_backed_up_subscriber_that_reads_holds_back_its_publisher(wire):
    subscriber, publisher = _pair(wire(**{"nats.max_pending": 64 * 1024}))
    subscriber.stop_reading()
    assert publisher.transport.producerState == "producing"
    payload = b"y" * 5000
    publisher.send(b"PUB s 5000\r\n%s\r\n" % payload * 4)  # 20 kB > max_pending / 4 waiting
    assert publisher.transport.producerState == "paused"  # its input is held
    subscriber.resume_reading()
    assert publisher.transport.producerState == "producing"
    assert subscriber.take().count(b"MSG s 1 5000\r\n") == 4
