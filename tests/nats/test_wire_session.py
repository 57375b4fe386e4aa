"""Wire scripts of a NATS connection's life: INFO, CONNECT, PING/PONG, login
and its timeout, errors, keepalive (bytes in, bytes out on a StringTransport,
time on a task.Clock: see tests/wire.py)."""

from __future__ import annotations

import json

import pytest

from tlscerts import make_pki

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'


def _info(line: bytes) -> dict:
    assert line.startswith(b"INFO ")
    return json.loads(line[5:])


def test_info_on_connect(wire):
    client = wire().connect("nats")
    info = _info(client.take_line())
    assert info["max_payload"] == 1048576
    assert info["headers"] is True
    assert "auth_required" not in info and "tls_required" not in info
    assert client.take() == b""


def test_connect_and_ping_answer_pong(wire):
    client = wire().connect("nats")
    client.take()
    client.send(CONNECT + b"PING\r\n")
    assert client.take() == b"PONG\r\n"


def test_verbose_is_the_default_without_connect(wire):
    client = wire().connect("nats")
    client.take()
    client.send(b"SUB a 1\r\nPING\r\n")
    assert client.take() == b"+OK\r\nPONG\r\n"


def test_client_ids_count_up(wire):
    broker = wire()
    first, second = broker.connect("nats"), broker.connect("nats")
    assert _info(second.take_line())["client_id"] == _info(first.take_line())["client_id"] + 1


def test_login_with_a_token(wire):
    client = wire(**{"auth.token": "s3cret"}).connect("nats")
    assert _info(client.take_line())["auth_required"] is True
    client.send(b'CONNECT {"verbose":false,"auth_token":"s3cret"}\r\nPING\r\n')
    assert client.take() == b"PONG\r\n"


def test_bad_token_is_an_authorization_violation(wire):
    client = wire(**{"auth.token": "s3cret"}).connect("nats")
    client.take()
    client.send(b'CONNECT {"verbose":false,"auth_token":"wrong"}\r\nPING\r\n')
    assert client.take() == b"-ERR 'Authorization Violation'\r\n"
    assert client.closing


def test_an_operation_before_connect_is_refused_when_auth_is_on(wire):
    client = wire(**{"auth.token": "s3cret"}).connect("nats")
    client.take()
    client.send(b"PING\r\n")
    assert client.take() == b"-ERR 'Authorization Violation'\r\n"
    assert client.closing


def test_auth_timeout_fires_on_the_clock(wire):
    client = wire(**{"auth.token": "s3cret", "auth.timeout": 2.0}).connect("nats")
    client.take()
    client.advance(1.9)
    assert client.take() == b"" and not client.closing
    client.advance(0.2)
    assert client.take() == b"-ERR 'Authentication Timeout'\r\n"
    assert client.closing


def test_login_in_time_cancels_the_auth_timeout(wire):
    client = wire(**{"auth.token": "s3cret", "auth.timeout": 2.0}).connect("nats")
    client.take()
    client.send(b'CONNECT {"verbose":false,"auth_token":"s3cret"}\r\n')
    client.advance(5)
    assert client.take() == b"" and not client.closing


def test_unknown_operation_is_an_error_and_closes(wire):
    client = wire().connect("nats")
    client.take()
    client.send(CONNECT + b"FOO bar\r\nPING\r\n")
    assert client.take() == b"-ERR 'Unknown Protocol Operation'\r\n"
    assert client.closing


def test_bad_connect_json_is_an_error_and_closes(wire):
    client = wire().connect("nats")
    client.take()
    client.send(b"CONNECT [1,2\r\nPING\r\n")
    assert client.take() == b"-ERR 'Parse Error: CONNECT needs a JSON object'\r\n"
    assert client.closing


def test_control_line_over_the_limit_is_an_error(wire):
    client = wire(**{"nats.max_control_line": 64}).connect("nats")
    client.take()
    client.send(CONNECT + b"SUB " + b"a" * 100 + b" 1\r\n")
    assert client.take() == b"-ERR 'Maximum Control Line Exceeded'\r\n"
    assert client.closing


def test_keepalive_pings_and_a_pong_keeps_the_connection(wire):
    client = wire(**{"nats.ping_interval": 10.0, "nats.max_pings_out": 2}).connect("nats")
    client.take()
    client.send(CONNECT)
    client.advance(9.9)
    assert client.take() == b""
    client.advance(0.2)
    assert client.take() == b"PING\r\n"
    client.send(b"PONG\r\n")
    for _ in range(3):  # answered each time: never stale
        client.advance(10)
        assert client.take() == b"PING\r\n"
        client.send(b"PONG\r\n")
    assert not client.closing


def test_unanswered_keepalive_pings_close_a_stale_connection(wire):
    client = wire(**{"nats.ping_interval": 10.0, "nats.max_pings_out": 2}).connect("nats")
    client.take()
    client.send(CONNECT)
    client.advance(10)
    assert client.take() == b"PING\r\n"
    client.advance(10)
    assert client.take() == b"PING\r\n"
    assert not client.closing
    client.advance(10)
    assert client.take() == b"-ERR 'Stale Connection'\r\n"
    assert client.closing


def test_over_the_connection_limit_gets_info_then_an_error(wire):
    broker = wire(**{"nats.max_connections": 1})
    first = broker.connect("nats")
    second = broker.connect("nats")
    assert first.take().startswith(b"INFO ") and not first.closing
    line = second.take_line()
    assert line.startswith(b"INFO ")
    assert second.take() == b"-ERR 'maximum connections exceeded'\r\n"
    assert second.closing
    second.finish()
    first.finish()
    third = broker.connect("nats")
    assert third.take().startswith(b"INFO ") and not third.closing


def test_the_shared_limits_apply_to_nats_unless_it_overrides_them(wire):
    assert _info(wire(**{"limits.max_payload": 2048}).connect("nats").take_line())["max_payload"] == 2048
    overridden = wire(**{"limits.max_payload": 2048, "nats.max_payload": 512}).connect("nats")
    assert _info(overridden.take_line())["max_payload"] == 512


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def test_tls_upgrade_after_info_and_the_handshake_timeout(wire, pki):
    client = wire(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.timeout": 2.0}).connect("nats")
    assert _info(client.take_line())["tls_required"] is True
    assert client.transport.tls_options is not None  # TLS starts right after INFO, in clear text
    client.advance(1.9)
    assert not client.transport.aborted
    client.advance(0.2)
    assert client.transport.aborted  # no handshake in time: cut off without a word


def test_a_finished_tls_handshake_stops_its_timeout(wire, pki):
    client = wire(**{"tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.timeout": 2.0}).connect("nats")
    client.take()
    client.advance(1.0)
    client.protocol.handshakeCompleted()
    client.advance(5)
    assert not client.closing
