"""JetStream answers compared with nats-server 2.15's, case by case.

Each expectation here was first checked against ``nats-server -js``: how an
ack body is read (-NAK delays, junk), that the API sees its subject's tokens
exactly as the client wrote them, the stream and consumer checks of
STREAM.CREATE / CONSUMER.CREATE, and which ``$JS.API`` subjects get an
answer at all. Every scenario goes over the wire with raw protocol bytes.
"""

from __future__ import annotations

import pytest

from tests.test_jetstream_edge_cases import Api, _consumer, _stream

MINUTE = 60_000_000_000


def _api(raw_client):
    return Api(raw_client())


# -- ack bodies: read as nats-server's processAck / processNak read them -----------


def _two_delivered(api):
    """Stream S with messages "one" and "two", both delivered to the pull
    consumer "d" (ack wait 60 s) and awaiting their ack; their ack subjects."""
    _stream(api)
    _consumer(api, durable_name="d", ack_policy="explicit", ack_wait=MINUTE)
    for subject, payload in (("s.1", b"one"), ("s.2", b"two")):
        assert "error" not in api.request(subject, payload)
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch": 2}', "_R.pull")
    first, second = api.read_msg(), api.read_msg()
    assert (first[3], second[3]) == (b"one", b"two")
    return first[1], second[1]


def _next_message(api) -> bytes:
    """The payload of the next message the consumer hands out (a 408 status
    after 10 s if none comes)."""
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch": 1, "expires": 10000000000}', "_R.next")
    _subject, _reply, header, payload = api.read_msg()
    return payload if header is None else header


def _ack_pending(api) -> int:
    return api.request("$JS.API.CONSUMER.INFO.S.d")["num_ack_pending"]


@pytest.mark.parametrize("body", [
    b'-NAK {"delay": 1e400}',  # a float to Go: the int() of it used to raise OverflowError
    b'-NAK {"delay": 9223372036854775808}',  # beyond time.Duration's int64
    b'-NAK {"delay": "60000000000"}',  # a string
    b'-NAK {"delay": 6e10}',  # a float
    b'-NAK {"delay": 60000000000, "x": NaN}',  # not JSON to Go
    b'-NAK {"delay": 60000000000, "DELAY": "x"}',  # one of the keys Go reads is no duration
    b'-NAK {"a": ' + b"[" * 100_000,  # nested too deep
    b"-NAK 1e400",
    b"-NAK 9999999999h",  # a Go duration beyond int64
    b'-NAK {"delay": -5}',  # negative: due at once
])
def test_nak_delays_nats_server_cannot_read_redeliver_at_once(raw_client, body):
    """nats-server treats a -NAK whose delay it cannot read as a plain -NAK.
    The first message is NAKed with ``body``, the second plainly: the first
    must come back first."""
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, body)
    api.pub(second, b"-NAK")
    assert _next_message(api) == b"one"
    assert _ack_pending(api) == 2


@pytest.mark.parametrize("body", [
    b'-NAK {"delay": 60000000000}',
    b'-NAK {"Delay": 60000000000}',  # Go's encoding/json matches keys without regard to case
    b'-NAK {"delay": 1, "DELAY": 60000000000}',  # ... and the last of them wins
    b"-NAK 1m",  # a Go duration
    b"-NAK 1.5h",
    b'-NAK\t{"delay": 60000000000}',  # -NAK is a prefix: any white space, or none, may follow
    b'-NAK{"delay": 60000000000}',
])
def test_nak_delays_nats_server_reads_hold_the_message_back(raw_client, body):
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, body)
    api.pub(second, b"-NAK")
    assert _next_message(api) == b"two"
    assert _ack_pending(api) == 2  # the first waits out its delay; it was not acked


@pytest.mark.parametrize("body", [b"+ACK junk", b"+ACK ", b"junk", b"+WPIx", b" +ACK"])
def test_ack_bodies_nats_server_does_not_know_are_ignored(raw_client, body):
    """nats-server acks only on an empty body, +ACK or +OK exactly; other
    bodies are no verb at all. The message stays pending: a -NAK after the
    body still brings it back."""
    api = _api(raw_client)
    first, _second = _two_delivered(api)
    api.pub(first, body)
    api.pub(first, b"-NAK")
    assert _next_message(api) == b"one"


def test_plus_ok_and_term_with_a_reason_settle_the_message(raw_client):
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, b"+OK")
    api.pub(second, b"+TERM no longer wanted \xff")
    api.ping()
    assert _ack_pending(api) == 0
