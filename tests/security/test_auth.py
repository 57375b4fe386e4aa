"""flowmq.auth: passwords, checkers and realm through real twisted.cred Portal
logins, and the permission rules (``filter_covers`` against brute force).

No reactor runs here: bcrypt checks, which the checkers hand to their fair
queue of thread-pool work, get a synchronous runner instead, and every
Deferred has fired by the time ``outcome`` looks at it. The fair queue runs
its jobs with a stand-in for ``deferToThread`` that the test fires.
"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address

from flowmq.auth import passwords
from flowmq.auth.checkers import CertificateChecker, PasswordChecker, TokenChecker, distinguished_name
from flowmq.auth.credentials import (
    CertificateCredentials,
    ICertificateCredentials,
    ITokenCredentials,
    TokenCredentials,
    presented_by,
)
from flowmq.auth.fairqueue import FairQueue, QueueFull, source_of
from flowmq.auth.memo import VerifiedSecrets
from flowmq.auth.passwords import hash_password, is_hashed, verify_password
from flowmq.auth.permissions import UNRESTRICTED, Permissions
from flowmq.core.covers import filter_covers
from flowmq.auth.realm import FlowMQRealm, IFlowMQSession, Session, build_portal
from flowmq.core.router import filter_matches
from flowmq.core.topics import InvalidTopic

ROOT = Path(__file__).resolve().parents[2]


def outcome(deferred):
    """The result of a Deferred that has already fired, or its Failure."""
    results = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def refused(deferred) -> bool:
    result = outcome(deferred)
    return getattr(result, "check", lambda *_: False)(UnauthorizedLogin) is not None


class Runner:
    """Stands in for the fair queue of bcrypt checks: runs at once, counts its
    calls and notes the sources."""

    def __init__(self):
        self.calls = 0
        self.sources = []

    def submit(self, source, function, *args):
        self.calls += 1
        self.sources.append(source)
        return defer.maybeDeferred(function, *args)


class CountingVerifier:
    def __init__(self):
        self.stored = []

    def __call__(self, stored, password):
        self.stored.append(stored)
        return verify_password(stored, password)


@pytest.fixture(scope="module")
def alice_hash():
    return hash_password("wonderland")


def login(portal, credentials):
    return portal.login(credentials, None, IFlowMQSession)


# -- passwords ---------------------------------------------------------------


def test_hash_password_is_bcrypt_cost_11(alice_hash):
    assert alice_hash.startswith("$2b$11$")
    assert is_hashed(alice_hash)
    assert verify_password(alice_hash, "wonderland")
    assert not verify_password(alice_hash, "Wonderland")
    assert not verify_password(alice_hash, "")


def test_nats_bcrypt_prefixes_and_malformed_hashes():
    stored = bcrypt.hashpw("pässword".encode(), bcrypt.gensalt(rounds=4)).decode()
    for prefix in ("$2a$", "$2b$", "$2y$"):
        variant = prefix + stored[4:]
        assert is_hashed(variant)
        assert verify_password(variant, "pässword")
        assert not verify_password(variant, "password")
    # Malformed hashes match nothing (and do not reach the bcrypt package,
    # some versions of which panic on them).
    for malformed in ("$2b$04$garbage", "$2b$04$" + "é" * 53, "$2b$99$" + stored[7:], stored[:-1], stored + "x"):
        assert is_hashed(malformed)
        assert not verify_password(malformed, "pässword")


def test_plain_text_passwords():
    for stored in ("secret", "", "$1$not-bcrypt", "$2c$04$x", "pässword"):
        assert not is_hashed(stored)
        assert verify_password(stored, stored)
        assert not verify_password(stored, stored + "x")
    assert not is_hashed(None)
    assert not is_hashed(b"$2b$04$")


def test_bcrypt_uses_the_first_72_bytes_like_go():
    with pytest.raises(ValueError):
        hash_password("x" * 73)
    stored = bcrypt.hashpw(b"y" * 72, bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(stored, "y" * 72)
    assert verify_password(stored, "y" * 80)  # Go's CompareHashAndPassword agrees
    assert not verify_password(stored, "y" * 71)


def test_password_command_hashes_stdin():
    run = subprocess.run(
        [sys.executable, "-m", "flowmq.auth.passwords"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout.strip()
    assert printed.startswith("$2b$11$")
    assert verify_password(printed, "correct horse")


def test_password_prompt_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    answers = iter(["one", "one", "one", "two"])
    monkeypatch.setattr(passwords.getpass, "getpass", lambda prompt: next(answers))
    assert passwords._read_password(Terminal()) == "one"
    with pytest.raises(ValueError):
        passwords._read_password(Terminal())
    assert passwords._read_password(io.StringIO("pw\r\nrest")) == "pw"
    with pytest.raises(ValueError):
        passwords._read_password(io.StringIO(""))


# -- password checker -----------------------------------------------------------


def test_plain_passwords_are_checked_inline():
    runner, verifier = Runner(), CountingVerifier()
    portal = Portal(FlowMQRealm({}), [PasswordChecker({"bob": "builder"}, runner, verifier)])
    interface, session, logout = outcome(login(portal, UsernamePassword("bob", "builder")))
    assert interface is IFlowMQSession and IFlowMQSession.providedBy(session)
    assert session.user == "bob" and session.permissions is UNRESTRICTED
    logout()
    assert refused(login(portal, UsernamePassword("bob", "Builder")))
    assert refused(login(portal, UsernamePassword(b"bob", b"\xff")))
    assert runner.calls == 0
    # The wrong one is also checked against the (plain-text) dummy, as an unknown name is.
    assert verifier.stored[:2] == ["builder", "builder"] and len(verifier.stored) == 3


def test_bytes_credentials_as_twisted_passes_them():
    portal = Portal(FlowMQRealm({}), [PasswordChecker({"bob": "builder"})])
    _, session, _ = outcome(login(portal, UsernamePassword(b"bob", b"builder")))
    assert session.user == "bob"


def test_unknown_user_costs_a_plain_verification():
    verifier = CountingVerifier()
    portal = Portal(FlowMQRealm({}), [PasswordChecker({"bob": "builder"}, Runner(), verifier)])
    assert refused(login(portal, UsernamePassword("eve", "builder")))
    assert len(verifier.stored) == 1 and verifier.stored[0] != "builder"


def test_bcrypt_passwords_in_the_queue_and_remembered(alice_hash):
    runner, verifier = Runner(), CountingVerifier()
    checker = PasswordChecker({"alice": alice_hash, "bob": "builder"}, runner, verifier)
    portal = Portal(FlowMQRealm({}), [checker])
    peer = IPv4Address("TCP", "10.1.2.3", 40000)
    _, session, _ = outcome(login(portal, presented_by(UsernamePassword("alice", "wonderland"), peer)))
    assert session.user == "alice"
    assert runner.calls == 1 and runner.sources == ["10.1.2.3"]
    # The right password again: remembered, no bcrypt.
    assert outcome(login(portal, UsernamePassword("alice", "wonderland")))[1].user == "alice"
    assert runner.calls == 1 and len(verifier.stored) == 1
    assert refused(login(portal, UsernamePassword("alice", "wonderlandx")))
    assert runner.calls == 2
    assert runner.sources[-1] == ""  # credentials that do not say where they come from share a line
    # An unknown name is checked against a bcrypt hash of the same cost, in the queue.
    assert refused(login(portal, UsernamePassword("mallory", "wonderland")))
    assert runner.calls == 3
    dummy = verifier.stored[-1]
    assert dummy != alice_hash and is_hashed(dummy) and dummy.startswith("$2b$11$")
    # bob's plain-text password is checked at once, without the queue...
    assert outcome(login(portal, UsernamePassword("bob", "builder")))[1].user == "bob"
    assert runner.calls == 3 and verifier.stored[-1] == "builder"
    # ...and a wrong one is refused after the dummy check, as an unknown name is.
    assert refused(login(portal, UsernamePassword("bob", "builderx")))
    assert runner.calls == 4 and verifier.stored[-2:] == ["builder", dummy]


def test_a_refused_or_cancelled_queue_refuses_or_cancels_the_login(alice_hash):
    class Crowded:
        def submit(self, source, function, *args):
            return defer.fail(QueueFull("8 logins from 10.1.2.3 are waiting"))

    portal = Portal(FlowMQRealm({}), [PasswordChecker({"alice": alice_hash}, Crowded())])
    failure = outcome(login(portal, UsernamePassword("alice", "wonderland")))
    assert failure.check(UnauthorizedLogin) and "8 logins" in failure.getErrorMessage()

    class Waiting:
        def submit(self, source, function, *args):
            return defer.Deferred()

    portal = Portal(FlowMQRealm({}), [PasswordChecker({"alice": alice_hash}, Waiting())])
    waiting = login(portal, UsernamePassword("alice", "wonderland"))
    waiting.cancel()
    assert outcome(waiting).check(defer.CancelledError)


def test_a_raising_verifier_refuses_the_login():
    def broken(stored, password):
        raise RuntimeError("boom")

    portal = Portal(FlowMQRealm({}), [PasswordChecker({"bob": "builder"}, verify=broken)])
    assert refused(login(portal, UsernamePassword("bob", "builder")))


# -- tokens and certificates ---------------------------------------------------------


def test_tokens_plain_and_hashed():
    hashed = bcrypt.hashpw(b"hashed-token", bcrypt.gensalt(rounds=4)).decode()
    runner = Runner()
    checker = TokenChecker({"s3cr3t": "svc", "other": "svc2", hashed: "hsvc"}, runner)
    assert checker.credentialInterfaces == (ITokenCredentials,)
    portal = Portal(FlowMQRealm({}), [checker])
    assert outcome(login(portal, TokenCredentials("s3cr3t")))[1].user == "svc"
    assert outcome(login(portal, TokenCredentials("other")))[1].user == "svc2"
    assert runner.calls == 0
    assert outcome(login(portal, TokenCredentials("hashed-token")))[1].user == "hsvc"
    assert runner.calls == 1
    assert outcome(login(portal, TokenCredentials("hashed-token")))[1].user == "hsvc"
    assert runner.calls == 1  # remembered
    assert refused(login(portal, TokenCredentials("s3cr3")))
    assert refused(login(portal, TokenCredentials(hashed)))  # the hash is not the token
    assert refused(login(portal, TokenCredentials("")))
    assert "s3cr3t" not in repr(TokenCredentials("s3cr3t"))


def test_plain_tokens_refused_without_the_thread_pool():
    runner = Runner()
    portal = Portal(FlowMQRealm({}), [TokenChecker({"t1": "a"}, runner)])
    assert refused(login(portal, TokenCredentials("t2")))
    assert runner.calls == 0


def test_certificates_subject_first_then_common_name():
    checker = CertificateChecker(
        {"CN=alice,O=Acme": "alice-by-dn", "alice": "alice-by-cn", "CN=x\\,y,O=Acme": "comma", "bob": "bob"}
    )
    assert checker.credentialInterfaces == (ICertificateCredentials,)
    portal = Portal(FlowMQRealm({}), [checker])

    def user(cn, subject):
        return outcome(login(portal, CertificateCredentials(cn, subject)))[1].user

    assert user("alice", "CN=alice,O=Acme") == "alice-by-dn"
    assert user("alice", "cn=alice, O=Acme") == "alice-by-dn"
    assert user("alice", "O=Acme,CN=alice") == "alice-by-dn"  # RDNs in any order
    assert user("alice", "CN=alice,O=Other") == "alice-by-cn"
    assert user("bob", "CN=bob,OU=Dev,O=Acme") == "bob"
    assert user("x,y", "CN=x\\,y,O=Acme") == "comma"
    assert refused(login(portal, CertificateCredentials("carol", "CN=carol,O=Acme")))
    assert refused(login(portal, CertificateCredentials("", "")))


def test_distinguished_names():
    assert distinguished_name("CN=a, o = Acme") == ("CN=a", "O=Acme")
    assert distinguished_name("CN=a+UID=1,O=X") == distinguished_name("UID=1+cn=a,O=X")
    assert distinguished_name("CN=a\\, b,O=X") == ("CN=a\\, b", "O=X")
    assert distinguished_name("CN=a\\ ") == ("CN=a\\ ",)
    assert distinguished_name("alice") is None
    assert distinguished_name("CN=a,,O=b") is None


# -- the memo of verified secrets and the fair queue -----------------------------------


def test_verified_secrets_vouch_for_the_same_slot_hash_and_secret_only():
    memo = VerifiedSecrets()
    memo.remember("alice", "$2b$11$hash-one", "pw")
    assert memo.vouches("alice", "$2b$11$hash-one", "pw")
    assert not memo.vouches("alice", "$2b$11$hash-two", "pw")  # the stored hash changed
    assert not memo.vouches("alice", "$2b$11$hash-one", "pw2")
    assert not memo.vouches("bob", "$2b$11$hash-one", "pw")
    memo.remember("alice", "$2b$11$hash-one", "pw2")  # one secret per slot: the last that matched
    assert memo.vouches("alice", "$2b$11$hash-one", "pw2")
    assert not memo.vouches("alice", "$2b$11$hash-one", "pw")


class ManualThreads:
    """Stands in for deferToThread: each job waits until the test ends the
    latest one (with at_once=1, the one running)."""

    def __init__(self):
        self.started = []  # (job name, Deferred)

    def __call__(self, function, *args):
        deferred = defer.Deferred()
        self.started.append((args[0], deferred))
        return deferred

    def finish(self, result=True):
        self.started[-1][1].callback(result)

    def fail(self, error):
        self.started[-1][1].errback(error)

    def names(self):
        return [name for name, _ in self.started]


def test_fair_queue_serves_the_sources_in_turn():
    threads = ManualThreads()
    queue = FairQueue(at_once=1, per_source=10, total=100, run=threads)
    results = [queue.submit("flood", None, "f%d" % i) for i in range(5)]
    results.append(queue.submit("other", None, "o1"))
    results.append(queue.submit("third", None, "t1"))
    for _ in range(7):
        threads.finish()
    # f0 was running and f1 waiting when o1 and t1 came: each waited for one
    # job of the flood's, not for all of them.
    assert threads.names() == ["f0", "f1", "o1", "t1", "f2", "f3", "f4"]
    assert [outcome(result) for result in results] == [True] * 7


def test_fair_queue_bounds_cancellation_and_failures():
    threads = ManualThreads()
    queue = FairQueue(at_once=1, per_source=2, total=3, run=threads)
    running = queue.submit("a", None, "a1")
    a2, a3 = queue.submit("a", None, "a2"), queue.submit("a", None, "a3")
    assert outcome(queue.submit("a", None, "a4")).check(QueueFull)  # two wait from "a"
    b1 = queue.submit("b", None, "b1")
    assert outcome(queue.submit("c", None, "c1")).check(QueueFull)  # three wait in all
    # A cancelled waiting job leaves its line, making room; it never runs.
    a2.cancel()
    assert outcome(a2).check(defer.CancelledError)
    c1 = queue.submit("c", None, "c1")
    # A cancelled running job is answered at once; its result, later, is dropped.
    running.cancel()
    assert outcome(running).check(defer.CancelledError)
    threads.finish()
    threads.finish(False)
    threads.fail(RuntimeError("boom"))  # a job that raised fails its Deferred; the next one starts
    threads.finish()
    assert threads.names() == ["a1", "a3", "b1", "c1"]
    assert outcome(a3) is False and outcome(b1).check(RuntimeError) and outcome(c1) is True


def test_sources_are_addresses_and_ipv6_blocks():
    assert source_of("127.0.0.2") == "127.0.0.2"
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert source_of("2001:db8:0:1::1") != source_of("2001:db8::1")
    assert source_of("") == "" and source_of("some-unix-socket") == "some-unix-socket"


# -- realm and portal ----------------------------------------------------------------


def test_build_portal_off_without_credentials():
    assert build_portal({}, {}, {}, {}) is None
    assert build_portal({}, {}, {}, {"alice": Permissions()}) is None


def test_build_portal_with_every_kind_and_permissions():
    readonly = Permissions(publish_allow=[])
    responder = Permissions(publish_allow=[], allow_responses=True)
    portal = build_portal(
        {"alice": "pw"},
        {"tok": "svc"},
        {"CN=dev": "dev"},
        {"alice": readonly, "svc": responder},
        hash_checks=Runner(),
    )
    _, alice, _ = outcome(login(portal, UsernamePassword("alice", "pw")))
    assert alice.permissions is readonly and not alice.permissions.may_publish("a")
    _, dev, _ = outcome(login(portal, CertificateCredentials("dev", "CN=dev")))
    assert dev.permissions is UNRESTRICTED
    _, one, _ = outcome(login(portal, TokenCredentials("tok")))
    _, two, _ = outcome(login(portal, TokenCredentials("tok")))
    # allow_responses keeps state, so every session has its own copy.
    assert one.permissions is not two.permissions
    one.permissions.note_reply("_INBOX/1")
    assert not two.permissions.may_publish("_INBOX/1")
    assert one.permissions.may_publish("_INBOX/1")
    assert refused(login(portal, UsernamePassword("alice", "wrong")))


def test_realm_default_permissions_and_interfaces():
    default = Permissions(subscribe_allow=["public/#"])
    realm = FlowMQRealm({}, default_permissions=default)
    interface, session, _ = realm.requestAvatar(b"zed", None, IFlowMQSession)
    assert isinstance(session, Session) and session.user == "zed" and session.permissions is default
    with pytest.raises(NotImplementedError):
        realm.requestAvatar("zed", None, ITokenCredentials)


# -- permissions -------------------------------------------------------------------


def test_allow_lists_none_empty_and_deny_wins():
    everything = Permissions()
    assert everything.may_publish("a/b") and everything.may_subscribe("#")
    nothing = Permissions(publish_allow=[], subscribe_allow=[])
    assert not nothing.may_publish("a/b") and not nothing.may_subscribe("a/b")
    perms = Permissions(
        publish_allow=["orders/+/#", "status"],
        publish_deny=["orders/secret/#"],
        subscribe_allow=["orders/+/#"],
        subscribe_deny=["orders/secret"],
    )
    assert perms.may_publish("orders/new") and perms.may_publish("orders/eu/new")
    assert perms.may_publish("status") and not perms.may_publish("status/x")
    assert not perms.may_publish("orders")
    assert not perms.may_publish("orders/secret") and not perms.may_publish("orders/secret/x")
    assert perms.may_subscribe("orders/new") and perms.may_subscribe("orders/+")
    assert perms.may_subscribe("orders/eu/#") and perms.may_subscribe("orders/+/#")
    assert not perms.may_subscribe("orders/#")  # it would match "orders" itself
    assert not perms.may_subscribe("#") and not perms.may_subscribe("status")
    assert not perms.may_subscribe("orders/secret")
    # The wildcard subscription is allowed, its denied topics are not delivered.
    assert perms.may_subscribe("orders/+")
    assert not perms.may_receive("orders/secret") and perms.may_receive("orders/new")
    assert not perms.may_subscribe("orders/secret") and perms.may_subscribe("orders/secret/x")


def test_deny_covering_wildcards():
    perms = Permissions(subscribe_deny=["private/#"])
    assert not perms.may_subscribe("private/+") and not perms.may_subscribe("private/#")
    assert perms.may_subscribe("#") and not perms.may_receive("private/x") and perms.may_receive("public")


def test_publish_decisions_survive_the_cache():
    perms = Permissions(publish_allow=["a/+"])
    for round_ in range(2):
        for i in range(600):
            assert perms.may_publish("a/%d" % i)
            assert not perms.may_publish("b/%d" % i)


def test_may_receive_without_deny_is_true():
    perms = Permissions(publish_allow=[], subscribe_allow=["x"])
    assert perms.may_receive("anything/at/all")


def test_invalid_filters_are_refused():
    with pytest.raises(InvalidTopic):
        Permissions(publish_allow=["a/b#"])
    with pytest.raises(InvalidTopic):
        Permissions(subscribe_deny=[""])


def test_allow_responses_once_each_and_bounded():
    perms = Permissions(publish_allow=["svc/out"], publish_deny=["_INBOX/9"], allow_responses=True, max_responses=3)
    assert not perms.may_publish("_INBOX/1")
    perms.note_reply("_INBOX/1")
    assert perms.may_publish("_INBOX/1") and not perms.may_publish("_INBOX/1")
    for i in range(2, 6):
        perms.note_reply("_INBOX/%d" % i)
    assert not perms.may_publish("_INBOX/2")  # the oldest, forgotten
    assert all(perms.may_publish("_INBOX/%d" % i) for i in (3, 4, 5))
    # A reply on an allowed topic does not use up the record; a deny does not block it.
    perms.note_reply("svc/out")
    perms.note_reply("_INBOX/9")
    assert perms.may_publish("svc/out") and perms.may_publish("svc/out")
    assert perms.may_publish("_INBOX/9") and not perms.may_publish("_INBOX/9")


def test_replies_are_not_recorded_without_allow_responses():
    perms = Permissions(publish_allow=[])
    perms.note_reply("_INBOX/1")
    assert not perms.may_publish("_INBOX/1")
    assert perms.for_session() is perms


def test_unrestricted():
    assert Permissions.ALL is UNRESTRICTED and not UNRESTRICTED.restricted
    assert Permissions().restricted
    UNRESTRICTED.note_reply("x")
    assert UNRESTRICTED.may_publish("a/b") and UNRESTRICTED.may_subscribe("#")
    assert UNRESTRICTED.may_receive("a") and UNRESTRICTED.for_session() is UNRESTRICTED


# -- filter_covers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "general, specific, covers",
    [
        ("a/+/#", "a/b", True),
        ("a/+/#", "a/#", False),
        ("a/#", "a/+/#", True),
        ("#", "#", True),
        ("+/#", "#", True),  # every topic has at least one level
        ("+/#", "#/a", True),
        ("#/+", "+/#", True),
        ("+", "#", False),
        ("a/+", "a/#", False),
        ("#/a/#", "b/#/a", True),
        ("#/a/#", "b/#/+", False),
        ("+/+", "+/a", True),
        ("a/b", "a/+", False),
        ("a/b", "a/b", True),
    ],
)
def test_filter_covers_examples(general, specific, covers):
    assert filter_covers(general, specific) is covers


def test_filter_covers_gives_up_safely_on_pathological_filters():
    general = "#/a/" + "/".join(["+"] * 40)
    assert filter_covers(general, "/".join(["#/a/+"] * 40)) is False


_ALPHABET = ("a", "b", "c")  # "c" stands for any level the filters do not name
_TOPICS = [list(t) for n in range(1, 8) for t in itertools.product(_ALPHABET, repeat=n)]
_filters = st.lists(st.sampled_from(["a", "b", "+", "#"]), min_size=1, max_size=3).map("/".join)


@settings(max_examples=300, deadline=None)
@given(_filters, _filters)
def test_filter_covers_against_brute_force(general, specific):
    # Topics of up to len(general) + len(specific) + 1 levels find every
    # counterexample for filters this small (checked exhaustively).
    longest = general.count("/") + specific.count("/") + 3
    g, s = general.split("/"), specific.split("/")
    expected = all(filter_matches(g, t) for t in _TOPICS if len(t) <= longest and filter_matches(s, t))
    assert filter_covers(general, specific) is expected
