"""One protocol on several listeners: a plain and a TLS port at once (each
with its own TLS settings), the connection limit over all of them, and
client ids that name one client across them (flowmq.tap's protocol plugins,
flowmq.listener, [[nats.listeners]])."""

from __future__ import annotations

import asyncio
import json
import ssl

import nats
import pytest

from conftest import RawClient, flushed, run
from flowmq import config
from flowmq.security import Security
from tlscerts import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _port(broker, name):
    return broker.call(lambda: broker.service.listeners[name].port.getHost().port)


def _info(client):
    line = client.read_line()
    assert line.startswith(b"INFO ")
    return json.loads(line[5:])


def test_a_plain_and_a_tls_port_at_once(start_broker, pki):
    broker = start_broker(**{"nats.listeners": [{"host": "127.0.0.1", "port": 0, "cert": pki.server_cert,
                                                 "key": pki.server_key}]})
    tls_port = _port(broker, "NATS 2")
    plain_info = _info(RawClient(broker.port))
    tls_info = _info(RawClient(tls_port))
    assert "tls_required" not in plain_info
    assert tls_info["tls_required"] is True
    assert tls_info["client_id"] != plain_info["client_id"]  # one counter for the broker

    async def scenario():
        plain = await nats.connect("nats://127.0.0.1:%d" % broker.port, allow_reconnect=False)
        secure = await nats.connect("tls://localhost:%d" % tls_port, allow_reconnect=False,
                                    tls=ssl.create_default_context(cafile=pki.ca))
        received = asyncio.get_running_loop().create_future()

        async def handler(msg):
            received.set_result(msg.data)

        await secure.subscribe("across", cb=handler)
        await flushed(secure)
        await plain.publish("across", b"plain to tls")
        data = await asyncio.wait_for(received, 10)
        await plain.close()
        await secure.close()
        return data

    assert run(scenario()) == b"plain to tls"


def test_an_extra_plain_port_beside_a_tls_first_port(start_broker, pki):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key,
                             "tls.handshake_first": True, "nats.listeners": "tcp://127.0.0.1:0"})
    plain = RawClient(_port(broker, "NATS 2"))
    assert "tls_required" not in _info(plain)
    plain.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
    assert plain.read_line() == b"PONG"

    async def scenario():
        secure = await nats.connect("tls://localhost:%d" % broker.port, allow_reconnect=False,
                                    tls=ssl.create_default_context(cafile=pki.ca), tls_handshake_first=True)
        await flushed(secure)
        await secure.close()
        return True

    assert run(scenario())


def test_the_connection_limit_counts_every_listener_of_the_protocol(start_broker):
    broker = start_broker(**{"limits.max_connections": 1, "nats.listeners": "tcp://127.0.0.1:0"})
    first = RawClient(broker.port)
    _info(first)
    second = RawClient(_port(broker, "NATS 2"))
    _info(second)
    assert second.read_until_closed() == b"-ERR 'maximum connections exceeded'\r\n"
    first.close()
    second.close()


def test_client_ids_in_the_logs_are_unique_across_listeners(start_broker):
    broker = start_broker(**{"nats.listeners": "tcp://127.0.0.1:0,tcp://127.0.0.1:0"})
    ports = [broker.port, _port(broker, "NATS 2"), _port(broker, "NATS 3")]
    ids = [_info(RawClient(port))["client_id"] for port in ports for _ in range(2)]
    assert len(set(ids)) == 6


@pytest.mark.parametrize("entry, message", [
    ({"port": 0, "tls": True}, "nats.listeners[1].tls needs tls.cert and tls.key"),
    ({"port": 0, "cert": "/nonexistent.pem", "key": "/nonexistent.key"},
     "nats.listeners[1].cert: cannot load /nonexistent.pem"),
    ({"port": 0, "cert": "x.pem"}, "nats.listeners[1].cert and nats.listeners[1].key go together"),
])
def test_listener_tls_errors_name_the_entry_and_the_file(tmp_path, entry, message):
    path = tmp_path / "flowmq.toml"
    lines = ["[[nats.listeners]]"] + ["%s = %s" % (key, json.dumps(value)) for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(config.ConfigError) as caught:
        Security(config.load(str(path), {}))
    assert str(caught.value).startswith(str(path) + ": ")
    assert message in str(caught.value)


def test_a_run_from_a_plain_port_reaches_a_tls_first_subscriber_through_tls(start_broker, pki):
    """Kilobyte PUBs in a row from the plain port (on PyPy the reused
    buffers of flowmq/rawbytes.py, which a TLS connection must not take)
    reach a subscriber on the TLS-first port whole and in order."""
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key,
                             "tls.handshake_first": True, "nats.listeners": "tcp://127.0.0.1:0"})
    payloads = [(b"%04d" % n) * 256 for n in range(200)]
    pubs = [b"PUB secret.x 1024\r\n%s\r\n" % payload for payload in payloads]

    async def scenario():
        secure = await nats.connect("tls://localhost:%d" % broker.port, allow_reconnect=False,
                                    tls=ssl.create_default_context(cafile=pki.ca), tls_handshake_first=True)
        got = []
        done = asyncio.Event()

        async def take(msg):
            got.append(msg.data)
            if len(got) == len(payloads):
                done.set()

        await secure.subscribe("secret.x", cb=take)
        await flushed(secure)
        plain = RawClient(_port(broker, "NATS 2"))
        _info(plain)
        loop = asyncio.get_running_loop()
        # One PUB first, so that the reads of the rest go on from a known line.
        plain.send(b'CONNECT {"verbose":false}\r\n' + pubs[0] + b"PING\r\n")
        assert await loop.run_in_executor(None, plain.read_line) == b"PONG"
        await loop.run_in_executor(None, plain.send, b"".join(pubs[1:]))
        await asyncio.wait_for(done.wait(), 10)
        plain.close()
        await secure.close()
        return got

    assert run(scenario()) == payloads
