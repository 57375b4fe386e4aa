"""Core NATS answers compared with nats-server 2.15's: subjects with empty
tokens, and pedantic mode.

nats-server takes a publish to a subject with an empty token (``a..b``,
``.a``, ``a.``) without a word outside pedantic mode, but no subscription
can match it: it reaches nobody, and a request gets "no responders". A
reply subject with empty tokens is delivered as it came. In pedantic mode,
which a client is in unless its CONNECT says ``"pedantic": false`` (nats-py,
nats.go and nats.js all say so), a publish subject with an empty or a
wildcard token also gets ``-ERR 'Invalid Publish Subject'``, and the message
goes on all the same. Every expectation was checked against nats-server.
"""

from __future__ import annotations

import nats
import nats.errors
import pytest

from tests.conftest import run

PEDANTIC = b'{"verbose":false,"headers":true,"no_responders":true}'  # no "pedantic": nats-server's default
ODD_SUBJECTS = [b"a..b", b".a", b"a.", b"...c5..b", b"."]


def _read_no_responders(client) -> None:
    """The next message is a "503" status (no responders) to _INBOX.r, sid 9.
    (nats-server 2.11 and later add a Nats-Subject header, which FlowMQ, at
    protocol level 2.10, does not.)"""
    operation, subject, sid, header_size, size = client.read_line().split(b" ")
    assert (operation, subject, sid, header_size) == (b"HMSG", b"_INBOX.r", b"9", size)
    assert client.read_exact(int(size) + 2).startswith(b"NATS/1.0 503\r\n")


def _subscriber(raw_client, subject=b">"):
    client = raw_client()
    client.handshake()
    client.subscribe(subject, b"1")
    return client


@pytest.mark.parametrize("subject", ODD_SUBJECTS)
def test_a_subject_with_an_empty_token_reaches_nobody_without_an_error(raw_client, subject):
    everything = _subscriber(raw_client)
    client = raw_client()
    client.handshake()  # as nats-py connects: not pedantic
    client.send(b"PUB %s 1\r\nx\r\nPUB ok 2\r\nhi\r\nPING\r\n" % subject)
    assert client.read_line() == b"PONG"
    assert everything.read_line() == b"MSG ok 1 2"


@pytest.mark.parametrize("subject", ODD_SUBJECTS)
@pytest.mark.parametrize("headers", [False, True])
def test_a_request_to_a_subject_with_an_empty_token_has_no_responders(raw_client, subject, headers):
    _subscriber(raw_client)
    client = raw_client()
    client.handshake()
    client.subscribe(b"_INBOX.r", b"9")
    if headers:
        client.send(b"HPUB %s _INBOX.r 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n" % subject)
    else:
        client.send(b"PUB %s _INBOX.r 1\r\nx\r\nPING\r\n" % subject)
    _read_no_responders(client)
    assert client.read_line() == b"PONG"


def test_nats_py_request_to_a_subject_with_an_empty_token_keeps_the_connection(broker):
    """FlowMQ answered -ERR, on which nats-py closes its connection."""
    async def main():
        nc = await nats.connect(broker.url, allow_reconnect=False)

        async def echo(msg):
            await msg.respond(msg.data)

        await nc.subscribe("svc", cb=echo)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("...c5..b", b"", timeout=10)
        assert nc.is_connected
        assert (await nc.request("svc", b"still here", timeout=10)).data == b"still here"
        await nc.close()

    run(main())


@pytest.mark.parametrize("headers", [False, True])
def test_a_reply_subject_with_an_empty_token_is_delivered_as_it_came(raw_client, headers):
    responder = _subscriber(raw_client, b"svc")
    client = raw_client()
    client.handshake()
    if headers:
        client.send(b"HPUB svc a..b 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nhi\r\nPING\r\n")
        assert responder.read_line() == b"HMSG svc 1 a..b 18 20"
        assert responder.read_exact(22) == b"NATS/1.0\r\nK: v\r\n\r\nhi\r\n"
    else:
        client.send(b"PUB svc a..b 2\r\nhi\r\nPING\r\n")
        assert responder.read_line() == b"MSG svc 1 a..b 2"
        assert responder.read_line() == b"hi"
    assert client.read_line() == b"PONG"
    responder.send(b"PUB a..b 6\r\nanswer\r\nPING\r\n")  # an answer there reaches nobody
    assert responder.read_line() == b"PONG"


@pytest.mark.parametrize("subject", [b"x.>", b"x.*", b"*", b">", b"a.*.b"])
def test_pedantic_mode_flags_a_wildcard_publish_subject_and_delivers_it(raw_client, subject):
    everything = _subscriber(raw_client)
    client = raw_client()
    client.handshake(PEDANTIC)
    client.send(b"PUB %s 1\r\nx\r\nPUB ok 1\r\ny\r\nPING\r\n" % subject)
    assert client.read_line() == b"-ERR 'Invalid Publish Subject'"
    assert client.read_line() == b"PONG"
    assert everything.read_line() == b"MSG %s 1 1" % subject
    assert everything.read_line() == b"x"
    assert everything.read_line() == b"MSG ok 1 1"


def test_pedantic_mode_flags_a_subject_with_an_empty_token(raw_client):
    client = raw_client()
    client.handshake(PEDANTIC)
    client.subscribe(b"_INBOX.r", b"9")
    client.send(b"PUB a..b _INBOX.r 1\r\nx\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'Invalid Publish Subject'"
    _read_no_responders(client)


def test_pedantic_mode_does_not_look_at_the_reply_subject(raw_client):
    everything = _subscriber(raw_client, b"svc")
    client = raw_client()
    client.handshake(PEDANTIC)
    client.send(b"PUB svc r.> 1\r\nx\r\nPING\r\n")
    assert client.read_line() == b"PONG"
    assert everything.read_line() == b"MSG svc 1 r.> 1"


def test_publishing_to_an_empty_token_needs_no_allow_list(start_broker, raw_client):
    """nats-server matches a subject with an empty token against no permission
    filter: an allow list (even ">") refuses it, a deny list lets it through
    (to nobody)."""
    broker = start_broker(**{"auth.users": [
        {"name": "allowed", "password": "pw", "publish": ["#"]},
        {"name": "denied", "password": "pw", "publish": {"deny": ["bar"]}},
    ]})
    for user, refused in ((b"allowed", True), (b"denied", False)):
        client = raw_client(broker.port)
        client.handshake(b'{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
                         b'"user":"%s","pass":"pw"}' % user)
        client.subscribe(b"_INBOX.r", b"9")
        client.send(b"PUB a..b _INBOX.r 1\r\nx\r\nPING\r\n")
        if refused:
            assert client.read_line() == b"-ERR 'Permissions Violation for Publish to \"a..b\"'"
        else:
            _read_no_responders(client)
        assert client.read_line() == b"PONG"
