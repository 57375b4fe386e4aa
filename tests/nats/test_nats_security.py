"""Authentication, authorization and TLS of the NATS listener, with nats-py
and raw bytes: the spec page's Security examples, failures, permissions,
auth timeout, TLS upgrade after INFO, TLS first, client certificates."""

from __future__ import annotations

import asyncio
import json
import ssl

import nats
import nats.errors
import pytest
from twisted.logger import globalLogPublisher

from conftest import RawClient, flushed, run
from flowmq.auth.passwords import hash_password
from tlscerts import make_pki

ALICE = {
    "name": "alice",
    "password": "wonderland",
    "publish": ["orders/#", "replies/#"],
    "subscribe": {"allow": ["orders/#", "_INBOX/#"], "deny": ["orders/secret"]},
}
RESPONDER = {"name": "svc", "password": "svc-pass", "publish": [], "subscribe": ["svc/#"],
             "allow_responses": True}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _connect_fails(url, **options):
    async def scenario():
        try:
            nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=5, **options)
        except Exception as e:  # what nats-py raises is its business; it must fail
            return e
        await nc.close()
        return None

    return run(scenario())


def _error_recorder():
    """A list, and a nats-py error_cb that appends each error's text to it."""
    errors = []

    async def on_error(e):
        errors.append(str(e))

    return errors, on_error


async def _echo_once(nc, subject, data):
    """Subscribe, publish ``data``, return what came back, close."""
    sub = await nc.subscribe(subject)
    await nc.publish(subject, data)
    received = (await sub.next_msg(timeout=5)).data
    await nc.close()
    return received


def _round_trip(url, subject="orders.new", **options):
    async def scenario():
        nc = await nats.connect(url, allow_reconnect=False, **options)
        return await _echo_once(nc, subject, b"hello")

    return run(scenario())


# -- the spec page's examples --------------------------------------------------


def test_spec_user_and_password(start_broker):
    broker = start_broker(**{"auth.user": "username", "auth.password": "password"})

    async def scenario():
        nc = await nats.connect(
            broker.url,
            user="username",
            password="password"
        )
        return await _echo_once(nc, "sensors.temperature", b"22.5")

    assert run(scenario()) == b"22.5"


def test_spec_token(start_broker):
    broker = start_broker(**{"auth.token": "your-auth-token"})

    async def scenario():
        nc = await nats.connect(
            broker.url,
            token="your-auth-token"
        )
        return await _echo_once(nc, "a", b"x")

    assert run(scenario()) == b"x"


def test_spec_tls(start_broker, pki):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key})

    async def scenario():
        nc = await nats.connect(
            "tls://localhost:%d" % broker.port,
            tls=ssl.create_default_context(cafile=pki.ca)
        )
        return await _echo_once(nc, "secure", b"over TLS")

    assert run(scenario()) == b"over TLS"


# -- authentication ---------------------------------------------------------------


def test_bcrypt_password_and_credentials_in_url(start_broker):
    broker = start_broker(**{"auth.users": [{"name": "bob", "password": hash_password("builder")}]})
    assert _round_trip("nats://bob:builder@127.0.0.1:%d" % broker.port) == b"hello"
    assert _connect_fails("nats://bob:wrong@127.0.0.1:%d" % broker.port) is not None


def test_info_says_auth_required(start_broker):
    broker = start_broker(**{"auth.token": "t"})
    info = json.loads(RawClient(broker.port).read_line()[5:])
    assert info["auth_required"] is True
    assert "tls_required" not in info


@pytest.mark.parametrize(
    "connect",
    [
        b'{"verbose":false,"user":"alice","pass":"wrong"}',
        b'{"verbose":false,"user":"nobody","pass":"wonderland"}',
        b'{"verbose":false,"auth_token":"not-the-token"}',
        b'{"verbose":false}',
    ],
)
def test_failed_logins_get_authorization_violation(start_broker, connect):
    broker = start_broker(**{"auth.users": [ALICE], "auth.token": "the-token"})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b"CONNECT " + connect + b"\r\nPING\r\n")
    assert client.read_until_closed() == b"-ERR 'Authorization Violation'\r\n"


def test_nats_py_reports_wrong_password_and_token(start_broker):
    broker = start_broker(**{"auth.users": [ALICE], "auth.token": "the-token"})
    assert _connect_fails(broker.url, user="alice", password="wrong") is not None
    assert _connect_fails(broker.url, token="wrong") is not None
    assert _connect_fails(broker.url) is not None
    assert _round_trip(broker.url, user="alice", password="wonderland") == b"hello"
    assert _round_trip(broker.url, token="the-token", subject="anything") == b"hello"
    # nats-py sends a user name without password in the URL as the token
    assert _round_trip("nats://the-token@127.0.0.1:%d" % broker.port, subject="anything") == b"hello"


def test_operations_before_connect_are_refused(start_broker):
    broker = start_broker(**{"auth.token": "t"})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b"SUB x 1\r\n")
    assert client.read_until_closed() == b"-ERR 'Authorization Violation'\r\n"


def test_auth_timeout(start_broker):
    broker = start_broker(**{"auth.token": "t", "auth.timeout": 0.2})
    client = RawClient(broker.port)
    client.read_line()
    assert client.read_until_closed() == b"-ERR 'Authentication Timeout'\r\n"


def test_pipelined_operations_wait_for_the_login(start_broker):
    broker = start_broker(**{"auth.users": [{"name": "carol", "password": hash_password("pw")}]})
    client = RawClient(broker.port)
    client.read_line()
    # CONNECT (bcrypt: checked in a thread) with work pipelined behind it.
    client.send(b'CONNECT {"verbose":false,"user":"carol","pass":"pw"}\r\nSUB q 1\r\nPUB q 2\r\nok\r\nPING\r\n')
    assert [client.read_line() for _ in range(3)] == [b"MSG q 1 2", b"ok", b"PONG"]


def test_failed_login_is_logged_without_the_password(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = RawClient(broker.port)
        client.read_line()
        client.send(b'CONNECT {"user":"alice","pass":"s3cret-guess"}\r\n')
        client.read_until_closed()
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    texts = [formatEvent(event) for event in events]
    failures = [text for text in texts if "authentication failed" in text]
    assert failures and "'alice'" in failures[0] and "127.0.0.1" in failures[0]
    assert not any("s3cret-guess" in text for text in texts)


# -- authorization ----------------------------------------------------------------


def test_permission_violations_keep_the_connection(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b'CONNECT {"verbose":false,"user":"alice","pass":"wonderland"}\r\n'
                b"PUB forbidden 1\r\nx\r\nSUB secret.> 1\r\nSUB orders.> 2\r\n"
                b"PUB orders.new 1\r\ny\r\nPUB orders.secret 1\r\nz\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'Permissions Violation for Publish to \"forbidden\"'"
    assert client.read_line() == b"-ERR 'Permissions Violation for Subscription to \"secret.>\"'"
    # orders.> is allowed, but orders.secret is denied to alice's subscriptions
    assert [client.read_line() for _ in range(3)] == [b"MSG orders.new 2 1", b"y", b"PONG"]


def test_nats_py_gets_permission_errors_and_stays_connected(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})

    async def scenario():
        errors, on_error = _error_recorder()
        nc = await nats.connect(broker.url, user="alice", password="wonderland", error_cb=on_error,
                                allow_reconnect=False)
        await nc.publish("forbidden", b"x")
        await nc.subscribe("secret.>")
        await flushed(nc)
        sub = await nc.subscribe("orders.ok")
        await nc.publish("orders.ok", b"still here")
        data = (await sub.next_msg(timeout=5)).data
        connected = nc.is_connected
        await nc.close()
        return errors, data, connected

    errors, data, connected = run(scenario())
    assert any('permissions violation for publish to "forbidden"' in e.lower() for e in errors)
    assert any('permissions violation for subscription to "secret.>"' in e.lower() for e in errors)
    assert data == b"still here"
    assert connected


def test_allow_responses_lets_a_service_answer_requests(start_broker):
    """svc may publish nowhere, but may answer the requests it receives (allow_responses)."""
    broker = start_broker(**{"auth.users": [RESPONDER, {"name": "client", "password": "c"}]})

    async def scenario():
        errors, on_error = _error_recorder()
        service = await nats.connect(broker.url, user="svc", password="svc-pass", error_cb=on_error,
                                     allow_reconnect=False)

        async def handler(msg):
            await msg.respond(b"answer to " + msg.data)
            await service.publish("svc.elsewhere", b"not allowed")

        await service.subscribe("svc.echo", cb=handler)
        await flushed(service)
        client = await nats.connect(broker.url, user="client", password="c", allow_reconnect=False)
        response = await client.request("svc.echo", b"question", timeout=5)
        await flushed(service)
        await client.close()
        await service.close()
        return response.data, errors

    data, errors = run(scenario())
    assert data == b"answer to question"
    assert any('permissions violation for publish to "svc.elsewhere"' in e.lower() for e in errors)


def test_tokens_map_to_users_with_permissions(start_broker):
    broker = start_broker(**{"auth.users": [ALICE], "auth.tokens": [{"token": "alice-token", "user": "alice"}]})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b'CONNECT {"verbose":false,"auth_token":"alice-token"}\r\nPUB forbidden 0\r\n\r\nPING\r\n')
    assert client.read_line() == b"-ERR 'Permissions Violation for Publish to \"forbidden\"'"
    assert client.read_line() == b"PONG"


# -- TLS --------------------------------------------------------------------------


def test_tls_info_and_plain_client_refused(start_broker, pki):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key})
    client = RawClient(broker.port)
    info = json.loads(client.read_line()[5:])
    assert info["tls_required"] is True
    client.send(b'CONNECT {"verbose":false}\r\nSUB a 1\r\nPING\r\n')
    assert b"PONG" not in client.read_until_closed()


def test_tls_host_name_is_verified(start_broker, pki):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key})
    context = ssl.create_default_context(cafile=pki.ca)
    assert _connect_fails("tls://127.0.0.1:%d" % broker.port, tls=context, tls_hostname="wrong.example") is not None
    assert _round_trip("tls://127.0.0.1:%d" % broker.port, tls=context) == b"hello"
    other = ssl.create_default_context(cafile=pki.other_ca)
    assert _connect_fails("tls://localhost:%d" % broker.port, tls=other) is not None


@pytest.mark.parametrize("handshake_first", [False, True])
def test_tls_connections_outlive_the_handshake_timeout(start_broker, pki, handshake_first):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key,
                             "tls.handshake_first": handshake_first, "tls.timeout": 1.0})
    context = ssl.create_default_context(cafile=pki.ca)

    async def scenario():
        nc = await nats.connect("tls://localhost:%d" % broker.port, tls=context,
                                tls_handshake_first=handshake_first, allow_reconnect=False)
        await asyncio.sleep(1.5)  # past tls.timeout: the finished handshake stopped the clock
        return await _echo_once(nc, "after", b"the timeout")

    assert run(scenario()) == b"the timeout"


def test_client_certificate_mapped_to_a_user(start_broker, pki):
    broker = start_broker(**{
        "tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.ca": pki.ca, "tls.verify": True,
        "auth.users": [{key: value for key, value in ALICE.items() if key != "password"}],
        "auth.certificates": [{"cn": "alice", "user": "alice"}],
    })
    url = "tls://localhost:%d" % broker.port

    def context(cert=None):
        ctx = ssl.create_default_context(cafile=pki.ca)
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    assert _round_trip(url, tls=context(pki.client_cert("alice"))) == b"hello"
    assert _connect_fails(url, tls=context()) is not None  # no client certificate
    assert _connect_fails(url, tls=context(pki.client_cert("mallory"))) is not None  # not mapped
    assert _connect_fails(url, tls=context(pki.client_cert("alice", issuer="other_ca"))) is not None

    async def forbidden():
        errors, on_error = _error_recorder()
        nc = await nats.connect(url, tls=context(pki.client_cert("alice")), error_cb=on_error,
                                allow_reconnect=False)
        await nc.publish("forbidden", b"x")
        await flushed(nc)  # nats-py awaits error_cb for the -ERR, which came before the PONG
        await nc.close()
        return errors

    assert any("permissions violation for publish" in e.lower() for e in run(forbidden()))


def test_user_name_that_is_not_utf8_is_refused_cleanly(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b'CONNECT {"user":"\\ud800","pass":"x"}\r\n')
    assert client.read_until_closed() == b"-ERR 'Authorization Violation'\r\n"


def test_own_messages_give_no_right_to_answer(start_broker):
    """allow_responses covers requests from others, not a reply subject the
    user set on its own message (which would let it publish anywhere)."""
    broker = start_broker(**{"auth.users": [
        {"name": "svc", "password": "p", "publish": ["svc/self"], "subscribe": ["svc/#"], "allow_responses": True},
    ]})
    client = RawClient(broker.port)
    client.read_line()
    client.send(b'CONNECT {"verbose":false,"user":"svc","pass":"p"}\r\nSUB svc.self 1\r\n'
                b"PUB svc.self admin.cmd 2\r\nhi\r\nPING\r\n")
    assert [client.read_line() for _ in range(3)] == [b"MSG svc.self 1 admin.cmd 2", b"hi", b"PONG"]
    client.send(b"PUB admin.cmd 0\r\n\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'Permissions Violation for Publish to \"admin.cmd\"'"


def test_password_wins_over_an_unmapped_client_certificate(start_broker, pki):
    broker = start_broker(**{
        "tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.ca": pki.ca,
        "auth.users": [ALICE], "auth.certificates": [{"cn": "bob", "user": "alice"}],
    })
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(*pki.client_cert("mallory"))
    assert _round_trip("tls://localhost:%d" % broker.port, tls=context, user="alice",
                       password="wonderland") == b"hello"


def test_a_client_that_never_starts_tls_is_closed(start_broker, pki):
    broker = start_broker(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.timeout": 0.3})
    client = RawClient(broker.port)
    assert client.read_line().startswith(b"INFO ")
    assert client.read_until_closed() == b""
