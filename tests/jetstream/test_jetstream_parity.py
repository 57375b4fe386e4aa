"""JetStream answers compared with nats-server 2.15's, case by case.

Each expectation here was first checked against ``nats-server -js``: how an
ack body is read (-NAK delays, junk), that the API sees its subject's tokens
exactly as the client wrote them, the stream and consumer checks of
STREAM.CREATE / CONSUMER.CREATE, and which ``$JS.API`` subjects get an
answer at all. Every scenario goes over the wire with raw protocol bytes.
"""

from __future__ import annotations

import json

import pytest

from tests.jetstream.test_jetstream_edge_cases import Api, _consumer, _stream

MINUTE = 60_000_000_000


def _api(raw_client):
    return Api(raw_client())


def _error(answer):
    """(code, err_code, description) of an API answer's error."""
    error = answer["error"]
    return error["code"], error["err_code"], error["description"]


# -- ack bodies: read as nats-server's processAck / processNak read them -----------


def _two_delivered(api):
    """Stream S with messages "one" and "two", both delivered to the pull
    consumer "d" (ack wait 60 s) and awaiting their ack; their ack subjects."""
    _stream(api)
    _consumer(api, durable_name="d", ack_policy="explicit", ack_wait=MINUTE)
    for subject, payload in (("s.1", b"one"), ("s.2", b"two")):
        assert "error" not in api.request(subject, payload)
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch": 2}', "_R.pull")
    first, second = api.read_msg(), api.read_msg()
    assert (first[3], second[3]) == (b"one", b"two")
    return first[1], second[1]


def _next_message(api) -> bytes:
    """The payload of the next message the consumer hands out (a 408 status
    after 10 s if none comes)."""
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch": 1, "expires": 10000000000}', "_R.next")
    _subject, _reply, header, payload = api.read_msg()
    return payload if header is None else header


def _ack_pending(api) -> int:
    return api.request("$JS.API.CONSUMER.INFO.S.d")["num_ack_pending"]


@pytest.mark.parametrize("body", [
    b'-NAK {"delay": 1e400}',  # a float to Go: the int() of it used to raise OverflowError
    b'-NAK {"delay": 9223372036854775808}',  # beyond time.Duration's int64
    b'-NAK {"delay": "60000000000"}',  # a string
    b'-NAK {"delay": 6e10}',  # a float
    b'-NAK {"delay": 60000000000, "x": NaN}',  # not JSON to Go
    b'-NAK {"delay": 60000000000, "DELAY": "x"}',  # one of the keys Go reads is no duration
    b'-NAK {"a": ' + b"[" * 100_000,  # nested too deep
    b"-NAK 1e400",
    b"-NAK 9999999999h",  # a Go duration beyond int64
    b'-NAK {"delay": -5}',  # negative: due at once
])
def test_nak_delays_nats_server_cannot_read_redeliver_at_once(raw_client, body):
    """nats-server treats a -NAK whose delay it cannot read as a plain -NAK.
    The first message is NAKed with ``body``, the second plainly: the first
    must come back first."""
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, body)
    api.pub(second, b"-NAK")
    assert _next_message(api) == b"one"
    assert _ack_pending(api) == 2


@pytest.mark.parametrize("body", [
    b'-NAK {"delay": 60000000000}',
    b'-NAK {"Delay": 60000000000}',  # Go's encoding/json matches keys without regard to case
    b'-NAK {"delay": 1, "DELAY": 60000000000}',  # ... and the last of them wins
    b"-NAK 1m",  # a Go duration
    b"-NAK 1.5h",
    b'-NAK\t{"delay": 60000000000}',  # -NAK is a prefix: any white space, or none, may follow
    b'-NAK{"delay": 60000000000}',
])
def test_nak_delays_nats_server_reads_hold_the_message_back(raw_client, body):
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, body)
    api.pub(second, b"-NAK")
    assert _next_message(api) == b"two"
    assert _ack_pending(api) == 2  # the first waits out its delay; it was not acked


@pytest.mark.parametrize("body", [b"+ACK junk", b"+ACK ", b"junk", b"+WPIx", b" +ACK"])
def test_ack_bodies_nats_server_does_not_know_are_ignored(raw_client, body):
    """nats-server acks only on an empty body, +ACK or +OK exactly; other
    bodies are no verb at all. The message stays pending: a -NAK after the
    body still brings it back."""
    api = _api(raw_client)
    first, _second = _two_delivered(api)
    api.pub(first, body)
    api.pub(first, b"-NAK")
    assert _next_message(api) == b"one"


def test_plus_ok_and_term_with_a_reason_settle_the_message(raw_client):
    api = _api(raw_client)
    first, second = _two_delivered(api)
    api.pub(first, b"+OK")
    api.pub(second, b"+TERM no longer wanted \xff")
    api.ping()
    assert _ack_pending(api) == 0


# -- the API sees the tokens the client wrote --------------------------------------


@pytest.mark.parametrize("name", ["%2E", "%00", "P%25zz", "a%2Fb", "%252E"])
def test_stream_and_consumer_names_with_escape_like_text(raw_client, name):
    """A name is the text of its subject token, even where that text reads as
    an escape in FlowMQ's topics ("%2E" is a '.', "%00" an empty level)."""
    api = _api(raw_client)
    created = api.request("$JS.API.STREAM.CREATE." + name,
                          json.dumps({"name": name, "subjects": ["p.>"], "storage": "memory"}))
    assert "error" not in created, created
    assert api.request("$JS.API.STREAM.INFO." + name)["config"]["name"] == name
    assert api.request("$JS.API.STREAM.NAMES")["streams"] == [name]
    consumer = "C" + name
    created = api.request("$JS.API.CONSUMER.CREATE.%s.%s" % (name, consumer), json.dumps(
        {"stream_name": name, "config": {"name": consumer, "ack_policy": "explicit"}}))
    assert created["name"] == consumer, created
    api.request("p.x", b"m")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (name, consumer), b"1", "_R.pull")
    _subject, ack, _header, payload = api.read_msg()
    assert payload == b"m" and ack.startswith(b"$JS.ACK.%s.%s." % (name.encode(), consumer.encode()))
    api.pub(ack, b"+ACK")
    api.ping()
    assert api.request("$JS.API.CONSUMER.INFO.%s.%s" % (name, consumer))["num_ack_pending"] == 0
    assert api.request("$JS.API.STREAM.DELETE." + name) == {
        "success": True, "type": "io.nats.jetstream.api.v1.stream_delete_response"}


def test_direct_get_by_a_subject_with_escape_like_tokens(raw_client):
    """DIRECT.GET.<stream>.<subject> looks up the subject as written."""
    api = _api(raw_client)
    _stream(api, name="D", subjects=("d.>",), allow_direct=True)
    tokens = ["%2E", "%00", "%25zz", "%252E", "%2500", "a%2Fb"]
    for token in tokens:
        assert "error" not in api.request("d." + token, token)
    for token in tokens:
        api.pub("$JS.API.DIRECT.GET.D.d." + token, b"", "_R.get")
        _subject, _reply, header, payload = api.read_msg()
        assert payload == token.encode(), (token, header)
        assert b"Nats-Subject: d.%s\r\n" % token.encode() in header


# -- stream and consumer creation: nats-server's checks -----------------------------


def test_a_stream_cannot_be_created_sealed(raw_client):
    api = _api(raw_client)
    config = {"name": "S", "subjects": ["s.>"], "storage": "memory", "sealed": True}
    answer = api.request("$JS.API.STREAM.CREATE.S", json.dumps(config))
    assert _error(answer) == (500, 10052, "stream configuration for create can not be sealed")
    assert _error(api.request("$JS.API.STREAM.INFO.S"))[1] == 10059
    del config["sealed"]
    _stream(api)
    answer = api.request("$JS.API.STREAM.UPDATE.S", json.dumps(dict(config, sealed=True)))
    assert answer["config"]["sealed"] is True, answer  # sealing an existing stream is an update


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_roll_ups_need_the_purge_permission(raw_client, operation):
    api = _api(raw_client)
    if operation == "UPDATE":
        _stream(api)
    config = {"name": "S", "subjects": ["s.>"], "storage": "memory", "deny_purge": True, "allow_rollup_hdrs": True}
    answer = api.request("$JS.API.STREAM.%s.S" % operation, json.dumps(config))
    assert _error(answer) == (500, 10052, "roll-ups require the purge permission")


def test_stream_create_needs_the_name_in_the_body(raw_client):
    api = _api(raw_client)
    answer = api.request("$JS.API.STREAM.CREATE.S", json.dumps({"subjects": ["s.>"], "storage": "memory"}))
    assert _error(answer) == (400, 10056, "stream name in subject does not match request")


def _create(api, subject, config, stream="S"):
    body = {"config": config} if stream is None else {"stream_name": stream, "config": config}
    return api.request("$JS.API.CONSUMER." + subject, json.dumps(body))


@pytest.mark.parametrize("subject, config, expected", [
    # No name in the subject: an ephemeral consumer, which may not have a durable name.
    ("CREATE.S", {"durable_name": "D"},
     (400, 10020, "consumer expected to be ephemeral but a durable name was set in request")),
    ("CREATE.S", {"name": "A", "durable_name": "B"},
     (400, 10020, "consumer expected to be ephemeral but a durable name was set in request")),
    # The subject's name is the name; a durable name must be the same.
    ("CREATE.S.X", {"durable_name": "Y"},
     (400, 10017, "consumer name in subject does not match durable name in request")),
    ("CREATE.S.X", {"name": "X", "durable_name": "Y"},
     (400, 10017, "consumer name in subject does not match durable name in request")),
    # The legacy durable form needs the durable name in the body too.
    ("DURABLE.CREATE.S.D", {"name": "D"},
     (400, 10018, "consumer expected to be durable but a durable name was not set")),
    ("DURABLE.CREATE.S.D", {"durable_name": "E"},
     (400, 10017, "consumer name in subject does not match durable name in request")),
    # A filter subject in the subject must be the body's filter_subject.
    ("CREATE.S.F.s.a", {"name": "F"},
     (400, 10131, "Consumer create request did not match filtered subject from create subject")),
    ("CREATE.S.F.s.a", {"name": "F", "filter_subject": "s.b"},
     (400, 10131, "Consumer create request did not match filtered subject from create subject")),
    ("CREATE.S.F.s.a", {"name": "F", "filter_subjects": ["s.a"]},
     (400, 10137, "consumer with multiple subject filters cannot use subject based API")),
])
def test_consumer_create_refusals(raw_client, subject, config, expected):
    api = _api(raw_client)
    _stream(api)
    assert _error(_create(api, subject, config)) == expected
    assert api.request("$JS.API.CONSUMER.NAMES.S")["consumers"] == []


@pytest.mark.parametrize("subject, config, name, durable", [
    ("CREATE.S.X", {"name": "Y"}, "X", None),  # the subject's name wins over the body's
    ("CREATE.S.X", {"name": "Y", "durable_name": "X"}, "X", "X"),
    ("CREATE.S.X", {"name": "", "durable_name": "X"}, "X", "X"),
    ("CREATE.S.X", {"durable_name": ""}, "X", None),
    ("CREATE.S.F.s.a", {"name": "F", "filter_subject": "s.a"}, "F", None),
    ("DURABLE.CREATE.S.D", {"durable_name": "D"}, "D", "D"),
])
def test_consumer_create_names(raw_client, subject, config, name, durable):
    api = _api(raw_client)
    _stream(api)
    answer = _create(api, subject, config)
    assert answer["name"] == name, answer
    assert answer["config"].get("durable_name") == durable
    assert api.request("$JS.API.CONSUMER.NAMES.S")["consumers"] == [name]


def test_consumer_create_needs_the_stream_name_and_not_a_config(raw_client):
    api = _api(raw_client)
    _stream(api)
    mismatch = (400, 10056, "stream name in subject does not match request")
    assert _error(_create(api, "CREATE.S.A", {"name": "A"}, stream=None)) == mismatch
    # The name is checked before the stream is looked up.
    assert _error(_create(api, "CREATE.NOPE.A", {}, stream="S")) == mismatch
    assert _error(_create(api, "CREATE.NOPE.A", {}, stream="NOPE"))[1] == 10059
    # Without "config" the consumer has the default configuration.
    answer = api.request("$JS.API.CONSUMER.CREATE.S.B", json.dumps({"stream_name": "S"}))
    assert answer["name"] == "B" and answer["config"]["ack_policy"] == "none", answer
    answer = api.request("$JS.API.CONSUMER.CREATE.S.C", json.dumps({"stream_name": "S", "config": 5}))
    assert _error(answer)[:2] == (400, 10025)


# -- which $JS.API subjects get an answer ----------------------------------------------


@pytest.mark.parametrize("subject", [
    "$JS.API.FOO", "$JS.API.STREAM", "$JS.API.STREAM.TEMPLATE.CREATE.x",
    # nats-server's own subjects, with a token too many or too few
    "$JS.API.INFO.x", "$JS.API.STREAM.INFO", "$JS.API.STREAM.INFO.S.x", "$JS.API.STREAM.CREATE",
    "$JS.API.STREAM.NAMES.x", "$JS.API.STREAM.MSG.GET", "$JS.API.STREAM.MSG.GET.S.x",
    "$JS.API.CONSUMER.INFO.S", "$JS.API.CONSUMER.INFO.S.d.x", "$JS.API.CONSUMER.CREATE",
    "$JS.API.CONSUMER.DURABLE.CREATE.S", "$JS.API.CONSUMER.DURABLE.CREATE.S.d.x",
    "$JS.API.CONSUMER.NAMES", "$JS.API.CONSUMER.LIST.S.x", "$JS.API.CONSUMER.PAUSE.S",
    # the system account's
    "$JS.API.META.LEADER.STEPDOWN", "$JS.API.SERVER.REMOVE", "$JS.API.ACCOUNT.PURGE.x",
])
def test_subjects_that_are_no_api_get_no_answer(raw_client, subject):
    """nats-server answers only its own API subjects, with their number of
    tokens: a requester of anything else hears nothing (a timeout). The
    answer to the INFO request after it is the first thing that comes."""
    api = _api(raw_client)
    _stream(api)
    _consumer(api, durable_name="d")
    api.pub(subject, b"{}", "_R.nothing")
    assert api.request("$JS.API.INFO")["streams"] == 1


def test_the_api_prefix_itself_has_no_responders(raw_client):
    """"$JS.API" is not under nats-server's "$JS.API.>": no responders."""
    api = _api(raw_client)
    api.pub("$JS.API", b"", "_R.prefix")
    subject, _reply, header, _payload = api.read_msg()
    assert subject == b"_R.prefix" and header.startswith(b"NATS/1.0 503")


@pytest.mark.parametrize("subject, kind, error", [
    ("STREAM.SNAPSHOT.S", "stream_snapshot", (400, 10003, "bad request")),
    ("STREAM.RESTORE.S", "stream_restore", (400, 10003, "bad request")),
    ("CONSUMER.PAUSE.S.d", "consumer_pause", (400, 10003, "bad request")),
    ("CONSUMER.UNPIN.S.d", "consumer_unpin", (400, 10003, "bad request")),
    ("CONSUMER.RESET.S.d", "consumer_reset", (400, 10003, "bad request")),
    ("STREAM.LEADER.STEPDOWN.S", "stream_leader_stepdown", (503, 10010, "JetStream clustering support required")),
    ("STREAM.PEER.REMOVE.S", "stream_remove_peer", (503, 10010, "JetStream clustering support required")),
    ("STREAM.PEER.EVACUATE.S", "stream_evacuate_peer", (503, 10010, "JetStream clustering support required")),
    ("STREAM.CANCEL_MOVE.S", "stream_cancel_move", (503, 10010, "JetStream clustering support required")),
    ("CONSUMER.LEADER.STEPDOWN.S.d", "consumer_leader_stepdown",
     (503, 10010, "JetStream clustering support required")),
])
def test_nats_server_operations_flowmq_does_not_implement_get_an_error(raw_client, subject, kind, error):
    """Clustering operations get what a nats-server that is not clustered
    answers; the others a bad request rather than a timeout."""
    api = _api(raw_client)
    _stream(api)
    _consumer(api, durable_name="d")
    answer = api.request("$JS.API." + subject)
    assert _error(answer) == error
    assert answer["type"] == "io.nats.jetstream.api.v1.%s_response" % kind


def test_requests_without_a_reply_subject_still_run(raw_client):
    """nats-server runs an API request that has no reply subject (and
    answers nobody): a stream created that way exists, and is deleted that way."""
    api = _api(raw_client)
    api.pub("$JS.API.STREAM.CREATE.S", json.dumps({"name": "S", "subjects": ["s.>"], "storage": "memory"}))
    assert api.request("$JS.API.STREAM.NAMES")["streams"] == ["S"]
    api.pub("$JS.API.STREAM.DELETE.S")
    assert not api.request("$JS.API.STREAM.NAMES")["streams"]
