"""NATS subjects come back byte for byte, through core delivery and JetStream.

Outside pedantic mode nats-server takes any subject without empty tokens or
white space, wildcard tokens included, and delivers it as it was published.
FlowMQ turns every subject into a unified topic and back; these tests check
over the wire that no escape shows where nothing crossed into another
grammar (the mapping itself is tested with hypothesis in test_topics.py).
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from conftest import run

#: Subjects that look like wildcards or escapes of one grammar or the other;
#: nats-server v2.15 delivers each of them unchanged to a '>' subscriber.
TRICKY_SUBJECTS = [
    "x.>", "a.*.b", ">", "*", "a.+", "a.#", "a.%2A", "a.%3E", "a.%2B", "a.%", "a.%25zz", "a.%2525",
    "a.%2E", "a.%252E", "a.%00", "%2500", "a.b%2Fc", "a.b/c", "50%", "a.%25%2E",
]


def test_tricky_subjects_and_replies_are_delivered_as_published(broker):
    async def main():
        nc = await nats.connect(broker.url)
        received = []
        done = asyncio.get_running_loop().create_future()

        async def collect(msg):
            received.append((msg.subject, msg.reply))
            if len(received) == len(TRICKY_SUBJECTS) and not done.done():
                done.set_result(None)

        await nc.subscribe(">", cb=collect)
        for subject in TRICKY_SUBJECTS:
            await nc.publish(subject, b"v", reply="r.*." + subject)
        await asyncio.wait_for(done, 10)
        await nc.close()
        return received

    assert run(main()) == [(subject, "r.*." + subject) for subject in TRICKY_SUBJECTS]


@pytest.mark.parametrize("subject", [b"a.*.b", b"x.>", b"a.%2A"])
def test_wildcard_subscribers_match_literal_wildcard_tokens(raw_client, subject):
    """A '*' subscriber matches a literal '*' token as any other, and gets it back as sent."""
    client = raw_client()
    client.handshake()
    client.subscribe(b"a.*.b", b"1")
    client.subscribe(b"x.*", b"2")
    client.subscribe(b"a.*", b"3")
    client.send(b"PUB %s 1\r\nv\r\nPING\r\n" % subject)
    sid = {b"a.*.b": b"1", b"x.>": b"2", b"a.%2A": b"3"}[subject]
    assert client.read_line() == b"MSG %s %s 1" % (subject, sid)


def test_jetstream_keeps_literal_wildcard_subjects(broker):
    """A KV key such as ``x.>`` (nats-py refuses it unless told not to check)
    is stored under ``$KV.b.x.>`` and read back under that very subject."""
    async def main():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="b")
        assert await kv.put("x.>", b"one", validate_keys=False) == 1
        ack = await js.publish("$KV.b.a.*.%2A", b"two")
        assert ack.seq == 2
        stored = [await js.get_msg("KV_b", seq) for seq in (1, 2)]
        reader = await js.pull_subscribe("$KV.b.>", durable="reader", stream="KV_b")
        fetched = await reader.fetch(2, timeout=5)
        keys = sorted(await kv.keys())
        await nc.close()
        return [m.subject for m in stored], [m.subject for m in fetched], keys

    stored, fetched, keys = run(main())
    assert stored == fetched == ["$KV.b.x.>", "$KV.b.a.*.%2A"]
    assert keys == ["a.*.%2A", "x.>"]
