"""The request handlers of ``$JS.API.>``, as nats-server 2.10 answers them.

Each request is a message on ``$JS.API.<operation>[.<stream>[.<consumer>]]``
with a JSON body (or none); the answer is a JSON document published to the
request's reply subject, with an ``error`` object when the request fails.
Direct gets answer with the stored message itself, and pull requests
(CONSUMER.MSG.NEXT) with messages, so those two are not JSON.

As in nats-server, a request runs even without a reply subject (nobody
hears the answer), and a subject that is not one of nats-server's API
subjects, with its number of tokens, gets no answer at all (the requester
times out); the operations nats-server knows and FlowMQ does not implement
are answered with an error.
"""

from __future__ import annotations

import json

from flowmq.core.message import Message
from flowmq.core.filtertrie import FilterTrie, OverlapTooComplex, budget, distinct_owners, overlapping
from flowmq.core.interfaces import InternalTarget
from flowmq.core.store import TooManyStreams
from flowmq.core.topics import InvalidTopic
from flowmq.nats import convert
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.config import (
    INT64, UINT64, check_consumer_update, check_range, check_seq, consumer_config, consumer_filter_subjects,
    overlaps, stream_config, subject_trie, topic_filters,
)
from flowmq.nats.jetstream.consumer import random_name
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.stream import MAX_SUBJECT_DETAILS
from flowmq.logs import logger
from flowmq.nats.jetstream.wire import b64, rfc3339, status_message
from flowmq.nats.subjects import filter_to_topic_filter, topic_to_subject

log = logger("flowmq.jetstream")

_PAGE = 256  # entries per page of the LIST and NAMES answers
_TYPE = "io.nats.jetstream.api.v1.%s_response"
_ONE_OR_MORE = -1  # the arity of CONSUMER.CREATE: <stream>[.<name>[.<filter subject>]]


class JetStreamApi(InternalTarget):
    """Answers the requests published on ``$JS.API.>`` (the router hands them in)."""

    def __init__(self, service):
        self.service = service
        self.broker = service.broker
        self.total = 0
        self.errors = 0
        # operation tokens -> (handler, response type, number of tokens after them),
        # as nats-server subscribes them ($JS.API.STREAM.INFO.*: exactly one).
        self._routes = {
            ("INFO",): (self.account_info, "account_info", 0),
            ("STREAM", "CREATE"): (self.stream_create, "stream_create", 1),
            ("STREAM", "UPDATE"): (self.stream_update, "stream_update", 1),
            ("STREAM", "INFO"): (self.stream_info, "stream_info", 1),
            ("STREAM", "DELETE"): (self.stream_delete, "stream_delete", 1),
            ("STREAM", "NAMES"): (self.stream_names, "stream_names", 0),
            ("STREAM", "LIST"): (self.stream_list, "stream_list", 0),
            ("STREAM", "PURGE"): (self.stream_purge, "stream_purge", 1),
            ("STREAM", "MSG", "GET"): (self.stream_msg_get, "stream_msg_get", 1),
            ("STREAM", "MSG", "DELETE"): (self.stream_msg_delete, "stream_msg_delete", 1),
            ("CONSUMER", "CREATE"): (self.consumer_create, "consumer_create", _ONE_OR_MORE),
            ("CONSUMER", "DURABLE", "CREATE"): (self.consumer_durable_create, "consumer_create", 2),
            ("CONSUMER", "INFO"): (self.consumer_info, "consumer_info", 2),
            ("CONSUMER", "DELETE"): (self.consumer_delete, "consumer_delete", 2),
            ("CONSUMER", "NAMES"): (self.consumer_names, "consumer_names", 1),
            ("CONSUMER", "LIST"): (self.consumer_list, "consumer_list", 1),
            # nats-server's that FlowMQ does not implement: an error rather than a timeout.
            ("STREAM", "SNAPSHOT"): (_not_supported, "stream_snapshot", 1),
            ("STREAM", "RESTORE"): (_not_supported, "stream_restore", 1),
            ("CONSUMER", "PAUSE"): (_not_supported, "consumer_pause", 2),
            ("CONSUMER", "UNPIN"): (_not_supported, "consumer_unpin", 2),
            ("CONSUMER", "RESET"): (_not_supported, "consumer_reset", 2),
            # Clustering: what a nats-server that is not clustered answers.
            ("STREAM", "LEADER", "STEPDOWN"): (_clustering, "stream_leader_stepdown", 1),
            ("STREAM", "PEER", "REMOVE"): (_clustering, "stream_remove_peer", 1),
            ("STREAM", "PEER", "EVACUATE"): (_clustering, "stream_evacuate_peer", 1),
            ("STREAM", "CANCEL_MOVE"): (_clustering, "stream_cancel_move", 1),
            ("CONSUMER", "LEADER", "STEPDOWN"): (_clustering, "consumer_leader_stepdown", 2),
        }

    # -- dispatch -----------------------------------------------------------------

    def deliver(self, message, subscriptions) -> None:
        # The tokens exactly as the client wrote them (a filter subject's '>'
        # and a name such as "a%2Eb" included): the topic's levels are their
        # values, and the NATS subject of the topic is the text that was sent.
        tokens = topic_to_subject(message.topic).decode().split(".")[2:]
        reply = message.reply_to
        if not tokens or tokens[:2] == ["DIRECT", "GET"] or tokens[:3] == ["CONSUMER", "MSG", "NEXT"]:
            if reply is not None:
                try:
                    if not tokens:  # "$JS.API" itself, which nats-server's "$JS.API.>" does not match
                        self._no_responders(message)
                    elif tokens[0] == "DIRECT":
                        self.direct_get(tokens[2:], message)
                    else:
                        self.msg_next(tokens[3:], message)
                except Exception:  # a bug must cost one request, not the requester's connection
                    log.failure("JetStream API request on {topic} failed", topic=message.topic)
            return
        route = self._route(tokens)
        if route is None:
            return  # not an API subject of nats-server's: it does not answer either
        handler, kind, args = route
        self.total += 1
        try:
            document = handler(args, message.payload)
        except ApiError as e:
            self.errors += 1
            document = {"error": e.as_json()}
        except Exception as e:  # a bug must cost one request, not the requester's connection
            log.failure("JetStream API request on {topic} failed", topic=message.topic)
            self.errors += 1
            document = {"error": ApiError(errors.INTERNAL, err=type(e).__name__).as_json()}
        if reply is not None:  # without one the request still runs, as in nats-server
            document["type"] = _TYPE % kind
            self.service.reply(reply, document)

    def _route(self, tokens):
        """(handler, response type, arguments) of an API subject's tokens after
        ``$JS.API``, or None if nats-server has no such subject."""
        for length in (3, 2, 1):
            route = self._routes.get(tuple(tokens[:length]))
            if route is not None:
                handler, kind, arity = route
                args = tokens[length:]
                if len(args) == arity or (arity == _ONE_OR_MORE and args):
                    return handler, kind, args
                return None
        return None

    @staticmethod
    def _body(payload: bytes, required=False):
        """The request's JSON object ({} for an empty body unless required)."""
        if not payload.strip():
            if required:
                raise ApiError(errors.BAD_REQUEST)
            return {}
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise ApiError(errors.INVALID_JSON, err=str(e) or type(e).__name__) from None
        if not isinstance(document, dict):
            raise ApiError(errors.BAD_REQUEST)
        return document

    def _stream(self, args):
        stream = self.service.streams.get(args[0])
        if stream is None:
            raise ApiError(errors.STREAM_NOT_FOUND)
        return stream

    def _consumer(self, args):
        stream = self._stream(args[:1])
        consumer = stream.consumers.get(args[1])
        if consumer is None:
            raise ApiError(errors.CONSUMER_NOT_FOUND)
        return consumer

    # -- account and streams ------------------------------------------------------

    def account_info(self, args, payload) -> dict:
        service = self.service
        settings = service.settings
        document = service.account.info(service.streams.values())
        document.update({
            "streams": len(service.streams), "consumers": service.consumer_count(),
            "api": {"total": self.total, "errors": self.errors},
        })
        document["limits"].update({
            "max_streams": settings.max_streams, "max_consumers": settings.max_consumers, "max_ack_pending": -1,
            "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1, "max_bytes_required": False,
        })
        return document

    def stream_create(self, args, payload) -> dict:
        body = self._body(payload, required=True)
        if body.get("name") != args[0]:  # nats-server: the body names the subject's stream
            raise ApiError(errors.STREAM_NAME_MISMATCH)
        if body.get("sealed") is True:  # nats-server seals only an existing stream (STREAM.UPDATE)
            raise ApiError(errors.STREAM_INVALID_CONFIG, err="stream configuration for create can not be sealed")
        config = self._stream_config(body)
        unrestored = self.service.unrestored.get(config["name"])
        if unrestored is not None:  # its files are still there: a new stream must not take them over
            raise ApiError(errors.STREAM_NOT_RESTORED, reason=unrestored)
        existing = self.service.streams.get(config["name"])
        if existing is not None:
            if existing.config != config:
                raise ApiError(errors.STREAM_NAME_EXISTS)
            info = existing.info()
        else:
            if len(self.service.streams) >= self.service.settings.max_streams:
                raise ApiError(errors.MAX_STREAMS)
            self.service.account.check_reservation(config, self.service.streams.values(), creating=True)
            self._check_overlap(config)
            try:
                info = self.service.create_stream(config).info()
            except TooManyStreams as e:
                raise ApiError(errors.FILE_STREAMS_LIMIT, err=str(e)) from None
            except OSError as e:
                raise ApiError(errors.STREAM_CREATE, err=str(e)) from None
        info["did_create"] = True  # nats-server (not clustered) says so for the same configuration again too
        return info

    def stream_update(self, args, payload) -> dict:
        config = self._stream_config(self._body(payload, required=True))
        if config["name"] != args[0]:  # checked after the configuration, as nats-server does
            raise ApiError(errors.STREAM_NAME_MISMATCH)
        stream = self._stream(args)
        old = stream.config
        for key in ("storage", "retention"):
            if old[key] != config[key]:
                raise ApiError(errors.STREAM_UPDATE, err="stream configuration update can not change %s" % key)
        self.service.account.check_reservation(config, self.service.streams.values(), creating=False)
        self._check_overlap(config)
        try:
            self.service.update_stream(stream, config)
        except OSError as e:
            raise ApiError(errors.STREAM_UPDATE, err=str(e)) from None
        return stream.info()

    def _stream_config(self, body: dict) -> dict:
        config = stream_config(body, self.broker.router.max_levels)
        # nats-server's checkStreamCfg refuses this too; checked on requests
        # only, so that a stream an older FlowMQ took is still restored.
        if config["deny_purge"] and config["allow_rollup_hdrs"]:
            raise ApiError(errors.STREAM_INVALID_CONFIG, err="roll-ups require the purge permission")
        return config

    def _check_overlap(self, config) -> None:
        """No subject may overlap another stream's (the stream's own old ones
        in ``service.subjects`` have its name as owner, so they do not count)."""
        name = config["name"]
        mine = FilterTrie((topic_filter, name) for topic_filter in topic_filters(config["subjects"]))
        for ours, theirs in overlaps(mine, self.service.subjects, errors.STREAM_INVALID_CONFIG):
            if distinct_owners(ours, theirs):
                raise ApiError(errors.STREAM_SUBJECT_OVERLAP)

    def stream_info(self, args, payload) -> dict:
        """The stream, the cluster (only this answer has it, as in nats-server)
        and, for a subjects_filter, the matching subjects a page at a time."""
        stream = self._stream(args)
        body = self._body(payload)
        info = stream.info()
        info["cluster"] = {"leader": self.service.server_name}
        subjects_filter, offset, total = _subject_field(body, "subjects_filter"), _offset(body), 0
        if subjects_filter:
            page, total = stream.subjects(subjects_filter, offset)
            if page:
                info["state"]["subjects"] = page
        # nats-server's paging of the subjects: all zero unless some match.
        info.update(total=total, offset=offset if total else 0, limit=MAX_SUBJECT_DETAILS if total else 0)
        return info

    def stream_delete(self, args, payload) -> dict:
        if args[0] in self.service.unrestored:
            self.service.delete_unrestored(args[0])
        else:
            self.service.delete_stream(self._stream(args))
        return {"success": True}

    def _matching_streams(self, payload) -> list:
        body = self._body(payload)
        streams = sorted(self.service.streams.values(), key=lambda s: s.name)
        subject = _subject_field(body, "subject")
        if subject:
            # The walk visits at most the nodes of every stream's subjects.
            wanted = FilterTrie(((_topic_filter(subject), None),))
            subjects = self.service.subjects
            names: set = set()
            try:
                for _wanted, owners in overlapping(wanted, subjects, budget(subjects.levels + wanted.levels)):
                    names.update(owners)
            except OverlapTooComplex:
                raise ApiError(errors.BAD_REQUEST) from None
            streams = [s for s in streams if s.name in names]
        return streams, _offset(body)

    def stream_names(self, args, payload) -> dict:
        streams, offset = self._matching_streams(payload)
        return {"total": len(streams), "offset": offset, "limit": _PAGE,
                "streams": [s.name for s in streams[offset:offset + _PAGE]]}

    def stream_list(self, args, payload) -> dict:
        streams, offset = self._matching_streams(payload)
        return {"total": len(streams), "offset": offset, "limit": _PAGE,
                "streams": [s.info() for s in streams[offset:offset + _PAGE]]}

    def stream_purge(self, args, payload) -> dict:
        stream = self._stream(args)
        if stream.config["deny_purge"]:
            raise ApiError(errors.PURGE_FAILED, err="stream purge not permitted")
        body = self._body(payload)
        seq, keep, subject = _integer_field(body, "seq"), _integer_field(body, "keep"), _subject_field(body, "filter")
        if seq and keep:
            raise ApiError(errors.BAD_REQUEST)
        if seq:
            check_seq(seq)  # the stream moves on to it when there is no filter
        topic_filter = _topic_filter(subject) if subject else None
        purged = stream.store.purge(topic_filter, up_to_seq=seq or None, keep=keep or None)
        self.service.purged(stream)
        return {"success": True, "purged": purged}

    @staticmethod
    def _find_message(stream, lookup):
        """The stored message of a ``(seq, last_by_subj, next_by_subj)``
        lookup, or ApiError. A subject that no stored message can have (an
        empty token ...) finds nothing, as in nats-server, not a bad request."""
        seq, last, following = lookup
        try:
            if last:
                stored = stream.store.last_message(filter_to_topic_filter(last))
            elif following:
                stored = stream.store.next_message(seq or 1, filter_to_topic_filter(following))
            else:
                stored = stream.store.get(seq)
        except InvalidTopic:
            stored = None
        if stored is None:
            raise ApiError(errors.NO_MESSAGE_FOUND)
        return stored

    def stream_msg_get(self, args, payload) -> dict:
        stream = self._stream(args)
        body = self._body(payload, required=True)
        try:
            lookup = _lookup(body)
        except ValueError as e:
            raise ApiError(errors.INVALID_JSON, err=str(e)) from None
        seq, last, following = lookup
        # nats-server: seq and last_by_subj exclude each other, as do last_by_subj
        # and next_by_subj; one is needed; this request has no batch form.
        if (seq and last) or (last and following) or not (seq or last or following) or any(
                body.get(key) for key in _BATCH_FIELDS):
            raise ApiError(errors.BAD_REQUEST)
        stored = self._find_message(stream, lookup)
        message = {"subject": topic_to_subject(stored.topic).decode(), "seq": stored.seq,
                   "data": b64(stored.payload), "time": rfc3339(stored.timestamp)}
        if stored.headers or stored.properties is not None:
            message["hdrs"] = b64(convert.header_block(stored))
        return {"message": message}

    def stream_msg_delete(self, args, payload) -> dict:
        stream = self._stream(args)
        if stream.config["deny_delete"]:
            raise ApiError(errors.MSG_DELETE_FAILED, err="message delete not permitted")
        body = self._body(payload, required=True)
        seq = _integer_field(body, "seq")
        if not seq:
            raise ApiError(errors.BAD_REQUEST)
        if not stream.store.delete(seq, erase=not body.get("no_erase")):
            raise ApiError(errors.SEQUENCE_NOT_FOUND, seq=seq)
        return {"success": True}

    def direct_get(self, tokens, message) -> None:
        """$JS.API.DIRECT.GET.<stream>[.<subject>]: the message itself, with
        Nats-Stream/-Subject/-Sequence/-Time-Stamp headers, or a status:
        408 Empty Request / Malformed Request / Bad Request, 404 Message Not
        Found (nats-server's stream.go processDirectGetRequest)."""
        stream = self.service.streams.get(tokens[0]) if tokens else None
        if stream is None or not stream.config["allow_direct"]:
            self._no_responders(message)  # nats-server listens only for allow_direct streams
            return
        reply = message.reply_to
        try:
            stored = self._find_message(stream, _direct_lookup(tokens[1:], message.payload))
        except _Refused as e:
            self.broker.publish(status_message(reply, b"408", e.args[0]))
            return
        except ApiError:
            self.broker.publish(status_message(reply, b"404", b"Message Not Found"))
            return
        headers = tuple(stored.headers or ()) + (
            ("Nats-Stream", stream.name), ("Nats-Subject", topic_to_subject(stored.topic).decode()),
            ("Nats-Sequence", str(stored.seq)), ("Nats-Time-Stamp", rfc3339(stored.timestamp)))
        self.broker.publish(Message(reply, stored.payload, headers, properties=stored.properties))

    def _no_responders(self, message) -> None:
        """A request on a subject that nats-server has no subscription for
        (DIRECT.GET of a stream without allow_direct, MSG.NEXT of a consumer
        that does not exist): as there, the requester hears "no responders"
        (a 503 status) if it asked for that in CONNECT and nobody else
        listens on the subject."""
        if not getattr(message.origin, "no_responders", False):
            return
        subscriptions, groups = self.broker.router.match(message.topic)
        if groups or any(subscription.consumer is not self for subscription in subscriptions):
            return
        self.broker.deliver_to(message.reply_to, status_message(message.reply_to, b"503", b""))

    # -- consumers ----------------------------------------------------------------

    def consumer_create(self, args, payload) -> dict:
        """CONSUMER.CREATE.<stream>[.<name>[.<filter subject>]], with nats-server's
        rules (jsConsumerCreateRequest): without a name in the subject the
        consumer is ephemeral (a durable_name is refused); with one, that is
        its name (whatever "name" the body has) and a durable_name must be the
        same; a filter subject in the subject must be the body's filter_subject."""
        body, request = self._consumer_request(args[0], payload)
        if len(args) == 1:
            if request.get("durable_name"):
                raise ApiError(errors.CONSUMER_EPHEMERAL_WITH_DURABLE_NAME)
        else:
            name = args[1]
            if request.get("durable_name") not in (None, "", name):
                raise ApiError(errors.CONSUMER_NAME_MISMATCH)
            request["name"] = name
            if len(args) > 2:
                if request.get("filter_subjects"):
                    raise ApiError(errors.CONSUMER_MULTIPLE_FILTERS_IN_SUBJECT)
                if request.get("filter_subject") != ".".join(args[2:]):
                    raise ApiError(errors.CONSUMER_FILTER_MISMATCH)
        return self._create_consumer(args[0], request, body.get("action", ""))

    def consumer_durable_create(self, args, payload) -> dict:
        """CONSUMER.DURABLE.CREATE.<stream>.<durable> (nats-server < 2.9's
        form): the body's durable_name must be the subject's."""
        body, request = self._consumer_request(args[0], payload)
        if not request.get("durable_name"):
            raise ApiError(errors.CONSUMER_DURABLE_NAME_NOT_SET)
        if request["durable_name"] != args[1]:
            raise ApiError(errors.CONSUMER_NAME_MISMATCH)
        return self._create_consumer(args[0], request, body.get("action", ""))

    @classmethod
    def _consumer_request(cls, stream_name: str, payload: bytes):
        """(request body, its "config") of a consumer create request. As in
        nats-server, the body must name the subject's stream (checked before
        the stream is looked up), and no "config" is the zero configuration."""
        body = cls._body(payload, required=True)
        request = body.get("config")
        if request is None:
            request = {}
        elif not isinstance(request, dict):
            raise ApiError(errors.INVALID_JSON, err="config must be an object")
        if body.get("stream_name") != stream_name:
            raise ApiError(errors.STREAM_NAME_MISMATCH)
        return body, request

    def _create_consumer(self, stream_name: str, request: dict, action: str) -> dict:
        stream = self._stream([stream_name])
        service = self.service
        config = consumer_config(request, stream.config, {
            "max_ack_pending": service.settings.max_ack_pending, "max_waiting": service.settings.max_waiting})
        name = config.get("name") or config.get("durable_name")
        if name is None:
            name = config["name"] = random_name()
        existing = stream.consumers.get(name)
        if existing is not None:
            if existing.config == config:
                return existing.info()
            if action == "create":
                raise ApiError(errors.CONSUMER_EXISTS)
            check_consumer_update(existing.config, config)
            if stream.config["retention"] == "workqueue":
                self._check_work_queue(stream, config, name)
            service.update_consumer(existing, config)
            return existing.info()
        if action == "update":
            raise ApiError(errors.CONSUMER_DOES_NOT_EXIST)
        if service.consumer_count() >= service.settings.max_consumers or (
                0 < stream.config["max_consumers"] <= len(stream.consumers)):
            raise ApiError(errors.MAX_CONSUMERS)
        if stream.config["retention"] == "workqueue":
            self._check_work_queue(stream, config, name)
        return service.create_consumer(stream, config).info()

    @staticmethod
    def _check_work_queue(stream, config, name) -> None:
        """A work queue hands each message to one consumer: the filters of its
        consumers must not overlap (nats-server's partitionUnique)."""
        others = [c for c in stream.consumers.values() if c.name != name]
        if not others:
            return
        mine = consumer_filter_subjects(config)
        if not mine:
            raise ApiError(errors.CONSUMER_WQ_MULTIPLE_UNFILTERED)
        theirs = FilterTrie()
        for other in others:
            subjects = consumer_filter_subjects(other.config)
            if not subjects:  # it takes everything
                raise ApiError(errors.CONSUMER_WQ_OVERLAP)
            for topic_filter in topic_filters(subjects):
                theirs.add(topic_filter, other.name)
        if any(overlaps(subject_trie(mine), theirs, errors.CONSUMER_CREATE)):
            raise ApiError(errors.CONSUMER_WQ_OVERLAP)

    def consumer_info(self, args, payload) -> dict:
        return self._consumer(args).info()

    def consumer_delete(self, args, payload) -> dict:
        consumer = self._consumer(args)
        self.service.delete_consumer(consumer.stream, consumer.name)
        return {"success": True}

    def consumer_names(self, args, payload) -> dict:
        stream = self._stream(args)
        offset = _offset(self._body(payload))
        names = sorted(stream.consumers)
        return {"total": len(names), "offset": offset, "limit": _PAGE, "consumers": names[offset:offset + _PAGE]}

    def consumer_list(self, args, payload) -> dict:
        stream = self._stream(args)
        offset = _offset(self._body(payload))
        names = sorted(stream.consumers)
        return {"total": len(names), "offset": offset, "limit": _PAGE,
                "consumers": [stream.consumers[n].info() for n in names[offset:offset + _PAGE]]}

    def msg_next(self, tokens, message) -> None:
        """CONSUMER.MSG.NEXT.<stream>.<consumer>: a pull request."""
        stream = self.service.streams.get(tokens[0]) if len(tokens) == 2 else None
        consumer = stream.consumers.get(tokens[1]) if stream is not None else None
        if consumer is None:
            self._no_responders(message)  # nats-server listens there only while the consumer exists
        elif consumer.deliver_topic is not None:
            self.broker.publish(status_message(message.reply_to, b"409", b"Consumer is push based"))
        else:
            consumer.request_next(message.reply_to, message.payload)


def _not_supported(args, payload):
    raise ApiError(errors.BAD_REQUEST)


def _clustering(args, payload):
    raise ApiError(errors.CLUSTERING_REQUIRED)


def _subject_field(body: dict, key: str):
    """A request field that holds a subject: None, or a string."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(errors.BAD_REQUEST)
    return value


#: The fields of a batched direct get, which a by-subject DIRECT.GET and MSG.GET refuse.
_BATCH_FIELDS = ("batch", "max_bytes", "multi_last", "start_time", "up_to_seq", "up_to_time")


class _Refused(Exception):
    """A direct get answered with a 408 status; the argument is its description."""


def _lookup(body: dict):
    """``(seq, last_by_subj, next_by_subj)`` of a MSG.GET / DIRECT.GET body
    (0 and "" for those not set); ValueError for a field of the wrong type."""
    seq = body.get("seq") or 0
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= UINT64[2]:
        raise ValueError("seq must be a sequence number (a uint64)")
    subjects = []
    for key in ("last_by_subj", "next_by_subj"):
        value = body.get(key) or ""
        if not isinstance(value, str):
            raise ValueError("%s must be a subject" % key)
        subjects.append(value)
    return seq, subjects[0], subjects[1]


def _direct_lookup(key_tokens, payload: bytes):
    """The lookup of a DIRECT.GET, by its body or (``key_tokens``, the
    subject's tokens after the stream's name) by subject; _Refused if the
    request is empty, malformed or asks for two things at once."""
    if not payload and not key_tokens:
        raise _Refused(b"Empty Request")
    body = {}
    if payload:
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            lookup = _lookup(body)
        except (ValueError, RecursionError):
            raise _Refused(b"Malformed Request") from None
    if key_tokens:  # the subject is the lookup: the body may not ask for another
        if any(body.get(key) for key in ("seq", "last_by_subj", "next_by_subj") + _BATCH_FIELDS):
            raise _Refused(b"Bad Request")
        return 0, ".".join(key_tokens), ""
    seq, last, following = lookup
    if not (seq or last or following or body.get("multi_last") or body.get("start_time")):
        raise _Refused(b"Empty Request")
    if (seq and last) or (last and following) or body.get("multi_last") or body.get("start_time"):
        raise _Refused(b"Bad Request")  # (multi_last and start_time: FlowMQ does not serve them)
    return lookup


def _topic_filter(subject: str) -> str:
    try:
        return filter_to_topic_filter(subject)
    except InvalidTopic:
        raise ApiError(errors.BAD_REQUEST) from None


def _integer_field(body: dict, key: str, kind=UINT64):
    """A request field that holds an integer of the Go type ``kind``: None, or
    an int (BAD_REQUEST for another JSON type, INVALID_JSON if it does not fit)."""
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(errors.BAD_REQUEST)
    return value if value is None else check_range(value, key, kind)


def _offset(body: dict) -> int:
    offset = _integer_field(body, "offset", INT64) or 0
    if offset < 0:
        raise ApiError(errors.BAD_REQUEST)
    return offset
