"""What nats.js (v3, the JavaScript client) sends, byte for byte.

nats.js writes every publish that carries a headers object as HPUB, and when
that object is empty its header block is empty too: ``HPUB <subject>
<reply> 0 <size>``. It does so on every JetStream publish and KV put.
nats-server takes a header block of length 0 as a message without headers
(a subscriber gets MSG, not HMSG), and so must FlowMQ.

The raw-bytes tests below run everywhere; the last test drives the real
nats.js through node and is skipped when node or the nats.js packages are
missing (``npm install --prefix tests/nats/clients/nats-js``, or the packages in a
directory named by ``FLOWMQ_NATS_JS``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import nats
import pytest

from conftest import run

#: The CONNECT nats.js 3 sends (its version aside).
NATS_JS_CONNECT = (b'{"protocol":1,"version":"3.0.0","lang":"nats.js","verbose":false,'
                   b'"pedantic":false,"headers":true,"no_responders":true}')


def _request(client, subject: bytes, body: bytes, reply: bytes = b"_INBOX.js.1") -> dict:
    """A JetStream API request as a plain PUB; the JSON answer on ``reply``."""
    client.send(b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(body), body))
    return _read_json_reply(client, reply)


def _read_json_reply(client, reply: bytes) -> dict:
    header = client.read_line().split()
    assert header[:2] == [b"MSG", reply], header
    document = client.read_exact(int(header[-1]) + 2)[:-2]
    return json.loads(document)


@pytest.mark.parametrize(
    "hpub, delivered",
    [
        (b"HPUB greet.x _INBOX.js.7 0 5\r\nhello\r\n", b"MSG greet.x 1 _INBOX.js.7 5\r\nhello\r\n"),
        (b"HPUB greet.x 0 5\r\nhello\r\n", b"MSG greet.x 1 5\r\nhello\r\n"),
        (b"HPUB greet.x 0 0\r\n\r\n", b"MSG greet.x 1 0\r\n\r\n"),
    ],
)
def test_empty_header_block_is_a_message_without_headers(raw_client, hpub, delivered):
    """As nats-server v2.15 answers (checked with raw sockets): MSG, not HMSG,
    even to a subscriber that supports headers; the publisher gets no -ERR."""
    subscriber = raw_client()
    subscriber.handshake()
    subscriber.subscribe(b"greet.>")
    publisher = raw_client()
    publisher.handshake(NATS_JS_CONNECT)
    publisher.send(hpub + b"PING\r\n")
    assert publisher.read_line() == b"PONG"
    subscriber.send(b"PING\r\n")
    assert subscriber.read_exact(len(delivered)) == delivered
    assert subscriber.read_line() == b"PONG"


@pytest.mark.parametrize(
    "connect, hpub, error",
    [
        # nats-server closes such a connection too (it does not parse the rest).
        (b'{"verbose":false,"headers":true}', b"HPUB a 6 5\r\nhello\r\n",
         b"-ERR 'Parse Error: header size larger than total size'"),
        (b'{"verbose":false,"headers":true}', b"HPUB a 0 5x\r\nhello\r\n",
         b"-ERR 'Parse Error: bad or missing size'"),
        # HPUB needs "headers": true in CONNECT, even with an empty header block.
        (b'{"verbose":false}', b"HPUB a 0 5\r\nhello\r\n", b"-ERR 'message headers not supported'"),
    ],
)
def test_header_sizes_that_still_close_the_connection(raw_client, connect, hpub, error):
    client = raw_client()
    client.read_line()  # INFO
    client.send(b"CONNECT " + connect + b"\r\n" + hpub)
    assert client.read_until_closed() == error + b"\r\n"


def test_jetstream_publish_as_nats_js_sends_it_is_stored_and_acknowledged(raw_client):
    client = raw_client()
    client.handshake(NATS_JS_CONNECT)
    client.subscribe(b"_INBOX.js.*")
    created = _request(client, b"$JS.API.STREAM.CREATE.ORDERS", b'{"name":"ORDERS","subjects":["orders.>"]}')
    assert created["config"]["name"] == "ORDERS"
    client.send(b"HPUB orders.new _INBOX.js.2 0 5\r\nhello\r\n")
    assert _read_json_reply(client, b"_INBOX.js.2") == {"stream": "ORDERS", "seq": 1}
    stored = _request(client, b"$JS.API.STREAM.MSG.GET.ORDERS", b'{"seq":1}')["message"]
    assert (stored["subject"], base64.b64decode(stored["data"])) == ("orders.new", b"hello")
    assert "hdrs" not in stored


def test_kv_put_as_nats_js_sends_it(raw_client, broker):
    async def create_bucket():
        nc = await nats.connect(broker.url)
        await nc.jetstream().create_key_value(bucket="settings")
        await nc.close()

    async def read_key():
        nc = await nats.connect(broker.url)
        entry = await (await nc.jetstream().key_value("settings")).get("colour")
        await nc.close()
        return entry.value, entry.revision

    run(create_bucket())
    client = raw_client()
    client.handshake(NATS_JS_CONNECT)
    client.subscribe(b"_INBOX.js.*")
    client.send(b"HPUB $KV.settings.colour _INBOX.js.3 0 4\r\nblue\r\n")
    assert _read_json_reply(client, b"_INBOX.js.3") == {"stream": "KV_settings", "seq": 1}
    assert run(read_key()) == (b"blue", 1)


# -- the real nats.js, when node and its packages are here ---------------------------------

_NATS_JS_SCRIPT = r"""
const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager } = require("@nats-io/jetstream");
const { Kvm } = require("@nats-io/kv");
(async () => {
  const nc = await connect({ servers: process.argv[1] });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "JS", subjects: ["js.>"] });
  const ack = await jetstream(nc).publish("js.one", "hello");
  const kv = await new Kvm(nc).create("jsbucket");
  const revision = await kv.put("colour", "blue");
  const entry = await kv.get("colour");
  console.log(JSON.stringify({ stream: ack.stream, seq: ack.seq, revision: revision, value: entry.string() }));
  await nc.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _nats_js_directory():
    """The directory whose node_modules holds nats.js, or None."""
    directory = os.environ.get("FLOWMQ_NATS_JS") or os.path.join(os.path.dirname(__file__), "clients", "nats-js")
    if shutil.which("node") is None:
        return None
    for package in ("transport-node", "jetstream", "kv"):
        if not os.path.isdir(os.path.join(directory, "node_modules", "@nats-io", package)):
            return None
    return directory


@pytest.mark.skipif(_nats_js_directory() is None, reason="node or nats.js (FLOWMQ_NATS_JS) not available")
def test_real_nats_js_jetstream_publish_and_kv_put(broker):
    result = subprocess.run(
        ["node", "-e", _NATS_JS_SCRIPT, broker.url], cwd=_nats_js_directory(),
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout) == {"stream": "JS", "seq": 1, "revision": 1, "value": "blue"}
