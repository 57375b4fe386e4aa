"""A flood of bogus bcrypt logins locks nobody else out (issue 9).

Many connections from one address send CONNECT for a bcrypt user with a
wrong password, all at once; while their checks are queued, a right bcrypt
login from another address and plain-text logins (from the flooding address
too) must still get in before ``auth.timeout``. Every loopback address is on
``lo`` in Linux, so binding the client socket to 127.0.0.2 or 127.0.0.3
makes a client that comes from elsewhere. The outcomes (PONG or ``-ERR``)
are asserted, never times.
"""

from __future__ import annotations

import json
import socket

from conftest import RawClient
from twisted.logger import globalLogPublisher

from flowmq.auth.passwords import hash_password

#: Bogus logins in the flood: with two bcrypt checks at a time, more than
#: ``auth.timeout`` of hashing for any machine where bcrypt's cost 11 takes
#: over 0.1 s (it takes ~0.15 s on an idle 2-core CI machine).
FLOOD = 64
AUTH_TIMEOUT = 3.0
FLOODING_ADDRESS = "127.0.0.1"


class SourcedClient(RawClient):
    """A RawClient whose socket comes from a chosen loopback address."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        self.buffer = b""


def test_bogus_bcrypt_logins_from_one_address_lock_out_nobody(start_broker):
    broker = start_broker(**{
        "auth.timeout": AUTH_TIMEOUT,
        "auth.users": [
            {"name": "alice", "password": hash_password("wonderland")},  # cost 11, as in production
            {"name": "bob", "password": "builder"},  # plain text
        ],
    })
    clients = []
    failures = []  # logged tracebacks: a check cancelled when its client left is none

    def note_failures(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    def connect(source):
        client = SourcedClient(broker.port, source)
        clients.append(client)
        assert client.read_line().startswith(b"INFO ")  # accepted: one at a time, under the backlog
        return client

    def start_login(source, user, password):
        client = connect(source)
        options = {"verbose": False, "user": user, "pass": password}
        client.send(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        return client

    globalLogPublisher.addObserver(note_failures)
    try:
        flood = [connect(FLOODING_ADDRESS) for _ in range(FLOOD)]
        for client in flood:
            client.send(b'CONNECT {"verbose":false,"user":"alice","pass":"guess"}\r\nPING\r\n')
        others = [
            start_login("127.0.0.2", "alice", "wonderland"),  # bcrypt, from elsewhere
            start_login("127.0.0.3", "bob", "builder"),  # plain text, from elsewhere
            start_login(FLOODING_ADDRESS, "bob", "builder"),  # plain text, from the same address
        ]
        assert [client.read_line() for client in others] == [b"PONG"] * len(others)
        # alice's right password has been verified once: from the flooding
        # address too, it is answered without waiting behind the flood.
        assert start_login(FLOODING_ADDRESS, "alice", "wonderland").read_line() == b"PONG"
        # Every bogus login is refused, at once or when its time is up.
        for client in flood:
            answer = client.read_until_closed()
            assert answer in (b"-ERR 'Authorization Violation'\r\n", b"-ERR 'Authentication Timeout'\r\n")
        assert failures == []
    finally:
        globalLogPublisher.removeObserver(note_failures)
        for client in clients:
            client.close()
