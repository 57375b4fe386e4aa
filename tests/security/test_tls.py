"""flowmq.tls over real loopback TLS: Twisted serves, Python's ssl connects.

A tiny echo server (which reports ``peer_identity`` when its handshake
completes) listens with ``server_options(...)`` in the session's reactor
thread; the tests connect from their own thread with the ``ssl`` module.
"""

from __future__ import annotations

import queue
import socket
import ssl
import warnings

import pytest
from conftest import _ensure_reactor
from OpenSSL import SSL
from tlscerts import make_pki
from twisted.internet import reactor
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread
from zope.interface import implementer

from flowmq.tls import TLSConfigError, peer_identity, server_options

TIMEOUT = 5.0


@implementer(IHandshakeListener)
class IdentityEcho(Protocol):
    def handshakeCompleted(self):
        self.factory.events.put(("handshake", peer_identity(self.transport)))

    def dataReceived(self, data):
        self.transport.write(data)

    def connectionLost(self, reason):
        self.factory.events.put(("lost", reason))


class EchoServer:
    """An ``IdentityEcho`` listening with TLS ``options`` on 127.0.0.1."""

    def __init__(self, options):
        _ensure_reactor()
        self.factory = Factory.forProtocol(IdentityEcho)
        self.factory.events = queue.Queue()
        self.listening = blockingCallFromThread(
            reactor, reactor.listenSSL, 0, self.factory, options, interface="127.0.0.1"
        )
        self.port = self.listening.getHost().port

    def next_connection(self):
        """The server's view of its next connection, once closed: the peer
        identity if the handshake completed, else the string "refused"."""
        identity = "refused"
        while True:
            kind, value = self.factory.events.get(timeout=TIMEOUT)
            if kind == "lost":
                return identity
            identity = value

    def stop(self):
        blockingCallFromThread(reactor, self.listening.stopListening)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def serve():
    servers = []

    def start(*args, **kwargs):
        server = EchoServer(server_options(*args, **kwargs))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def client_context(pki, cert=None, trust=None):
    context = ssl.create_default_context(cafile=trust or pki.ca)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def echo(port, context, hostname="localhost"):
    """Connect, send a line, return (the echo, the negotiated TLS version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"hello over tls\n")
            received = b""
            while len(received) < 15:
                chunk = tls.recv(100)
                if not chunk:
                    break
                received += chunk
            return received, tls.version()


def assert_refused(server, context):
    """The handshake fails: the client gets no echo, the server never
    completes the handshake. (With TLS 1.3 the client's own handshake may
    finish before the server judges its certificate; the server's alert then
    arrives on the first read.)"""
    try:
        received, _ = echo(server.port, context)
    except (ssl.SSLError, ConnectionError) as exc:
        error = exc
    else:
        assert received == b"", received
        error = None
    assert server.next_connection() == "refused"
    return error


# -- server authentication ---------------------------------------------------

def test_client_verifying_the_server_by_name_and_address_echoes(pki, serve):
    server = serve(pki.server_cert, pki.server_key)
    context = client_context(pki)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    for hostname in ("localhost", "127.0.0.1"):
        received, version = echo(server.port, context, hostname)
        assert received == b"hello over tls\n"
        assert version in ("TLSv1.2", "TLSv1.3")
        assert server.next_connection() is None  # no ca: no client cert asked


def test_wrong_hostname_fails_verification(pki, serve):
    server = serve(pki.server_cert, pki.server_key)
    with pytest.raises(ssl.SSLCertVerificationError, match="not-this-host"):
        echo(server.port, client_context(pki), "not-this-host")


def test_client_trusting_another_ca_fails_verification(pki, serve):
    server = serve(pki.server_cert, pki.server_key)
    with pytest.raises(ssl.SSLCertVerificationError):
        echo(server.port, client_context(pki, trust=pki.other_ca))


def test_certificate_file_with_intermediate_sends_the_chain(pki, serve):
    # The client trusts only the root: it verifies only if the server sends
    # the intermediate from its certificate file.
    server = serve(pki.chained_cert, pki.chained_key)
    received, _ = echo(server.port, client_context(pki))
    assert received == b"hello over tls\n"


def test_tls_1_2_is_accepted_and_1_1_refused(pki, serve):
    # OpenSSL 3 may refuse TLS 1.1 by itself (security level), so check that
    # the options exclude it too: the flags Twisted sets on its contexts
    # (private, but pyOpenSSL offers no public getter).
    options = server_options(pki.server_cert, pki.server_key)._options
    assert options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1
    assert not options & SSL.OP_NO_TLSv1_2

    server = serve(pki.server_cert, pki.server_key)
    context = client_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert echo(server.port, context) == (b"hello over tls\n", "TLSv1.2")
    assert server.next_connection() is None

    old = client_context(pki)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all
    except (ValueError, ssl.SSLError):
        return  # this ssl cannot be set up for TLS 1.1: nothing more to test
    with pytest.raises(ssl.SSLError) as caught:
        echo(server.port, old)
    assert server.next_connection() == "refused"
    reason = str(caught.value).upper()
    if "NO_PROTOCOLS_AVAILABLE" not in reason:  # else: a local policy forbids TLS 1.1
        assert "PROTOCOL_VERSION" in reason  # the server's protocol_version alert


# -- client certificates -------------------------------------------------------

def test_required_client_certificate(pki, serve):
    server = serve(pki.server_cert, pki.server_key, ca=pki.ca, verify_clients=True)
    assert_refused(server, client_context(pki))
    assert_refused(server, client_context(pki, cert=pki.client_cert("mallory", issuer="other_ca")))

    received, _ = echo(server.port, client_context(pki, cert=pki.client_cert("alice")))
    assert received == b"hello over tls\n"
    assert server.next_connection() == ("alice", "CN=alice")


def test_optional_client_certificate_is_verified_when_sent(pki, serve):
    server = serve(pki.server_cert, pki.server_key, ca=pki.ca)
    received, _ = echo(server.port, client_context(pki))
    assert received == b"hello over tls\n"
    assert server.next_connection() is None

    received, _ = echo(server.port, client_context(pki, cert=pki.client_cert("bob")))
    assert received == b"hello over tls\n"
    assert server.next_connection() == ("bob", "CN=bob")

    assert_refused(server, client_context(pki, cert=pki.client_cert("mallory", issuer="other_ca")))


def test_peer_identity_of_a_plain_transport_is_none():
    class Plain:
        pass

    assert peer_identity(Plain()) is None


# -- configuration errors ------------------------------------------------------

def test_missing_certificate_file(pki, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TLSConfigError) as caught:
        server_options(missing, pki.server_key)
    assert str(caught.value).startswith("tls.cert: cannot load %s: " % missing)
    assert "No such file" in str(caught.value)


def test_garbage_certificate_file(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate\n")
    with pytest.raises(TLSConfigError) as caught:
        server_options(str(garbage), pki.server_key)
    assert str(caught.value).startswith("tls.cert: cannot load %s: " % garbage)


def test_garbage_key_file(pki, tmp_path):
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TLSConfigError) as caught:
        server_options(pki.server_cert, str(garbage))
    assert str(caught.value).startswith("tls.key: cannot load %s: " % garbage)


def test_key_not_matching_the_certificate(pki):
    _, other_key = pki.client_cert("someone")
    with pytest.raises(TLSConfigError) as caught:
        server_options(pki.server_cert, other_key)
    message = str(caught.value)
    assert message.startswith("tls.key: cannot load %s: " % other_key)
    assert pki.server_cert in message


def test_missing_ca_file(pki, tmp_path):
    missing = str(tmp_path / "no-ca.pem")
    with pytest.raises(TLSConfigError) as caught:
        server_options(pki.server_cert, pki.server_key, ca=missing, verify_clients=True)
    assert str(caught.value).startswith("tls.ca: cannot load %s: " % missing)


def test_verify_clients_needs_a_ca(pki):
    with pytest.raises(TLSConfigError, match="^tls.verify: needs tls.ca"):
        server_options(pki.server_cert, pki.server_key, verify_clients=True)
