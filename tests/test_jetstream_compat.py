"""JetStream behaviour that clients notice, compared with nats-server's.

Each test states what nats-server (2.10 .. 2.15, run with ``-js``) answers
for the same requests, and checks FlowMQ answers alike: redelivery timing
of -NAK with a delay, pull requests that expire, direct gets nobody serves,
rollups and purges by wildcard, configuration checks, the JSON of stream
answers and the byte counts of stored messages.
"""

from __future__ import annotations

import asyncio
import json

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from tests.conftest import run
from tests.test_jetstream_edge_cases import Api, _stream


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


async def _api(nc, subject, body=b""):
    """A JetStream API request; the decoded JSON answer."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    msg = await nc.request(subject, body, timeout=10)
    return json.loads(msg.data)


# -- redelivery and pull requests -----------------------------------------------------


def test_nak_with_delay_redelivers_after_the_delay_not_the_ack_wait(broker):
    """nats-server redelivers a -NAK {"delay": ns} when the delay has passed,
    however long ack_wait is (here 30 s)."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="NAKD", subjects=["nakd"])
        await js.publish("nakd", b"x")
        sub = await js.pull_subscribe("nakd", durable="d", config=ConsumerConfig(ack_wait=30))
        [first] = await sub.fetch(1, timeout=5)
        await first.nak(delay=0.5)
        [again] = await sub.fetch(1, timeout=10)
        await nc.close()
        return again

    again = run(main())
    assert (again.data, again.metadata.num_delivered) == (b"x", 2)


def test_a_pull_request_that_ran_out_gets_no_message_published_after(raw_client):
    """nats-server checks a pull request's expiry as it delivers: a message
    that comes after it (even before the request's timer fires) is not sent
    to it; the request ends with 408 and the message waits for the next."""
    api = Api(raw_client())
    _stream(api, "EXP", ["exp"])
    answer = api.request("$JS.API.CONSUMER.CREATE.EXP.c", json.dumps(
        {"stream_name": "EXP", "config": {"durable_name": "c", "ack_policy": "explicit"}}))
    assert "error" not in answer, answer
    api.client.subscribe(b"pull.inbox", b"7")
    # One write: the request's microsecond has run out when the publish after
    # it is read, in the same turn of the reactor, before any timer can fire.
    request = b'{"batch":1,"expires":1000}'
    api.client.send(b"PUB $JS.API.CONSUMER.MSG.NEXT.EXP.c pull.inbox %d\r\n%s\r\nPUB exp 5\r\nhello\r\n"
                    % (len(request), request))
    subject, _reply, header, payload = api.read_msg()
    assert (subject, payload) == (b"pull.inbox", b"")
    assert header.startswith(b"NATS/1.0 408 Request Timeout\r\n")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.EXP.c", b'{"batch":1,"no_wait":true}', "pull.inbox")
    subject, reply, header, payload = api.read_msg()
    assert (subject, header, payload) == (b"exp", None, b"hello")
    assert reply.startswith(b"$JS.ACK.EXP.c.1.1.")
