"""The request handlers of ``$JS.API.>``, as nats-server 2.10 answers them.

Each request is a message on ``$JS.API.<operation>[.<stream>[.<consumer>]]``
with a JSON body (or none); the answer is a JSON document published to the
request's reply subject, with an ``error`` object when the request fails.
Direct gets answer with the stored message itself, and pull requests
(CONSUMER.MSG.NEXT) with messages, so those two are not JSON.
"""

from __future__ import annotations

import json

from flowmq.core.message import Message
from flowmq.core.filtertrie import FilterTrie, budget, distinct_owners, overlapping
from flowmq.core.topics import SEPARATOR, TOPIC_LEVEL, InvalidTopic
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.config import (
    check_consumer_update, consumer_config, consumer_filter_subjects, overlaps, stream_config, subject_trie,
    topic_filters,
)
from flowmq.nats.jetstream.consumer import random_name
from flowmq.nats.jetstream.errors import ApiError
from flowmq.logs import logger
from flowmq.nats.jetstream.wire import b64, header_block, rfc3339, status_message
from flowmq.nats.subjects import filter_to_topic_filter, topic_to_subject

log = logger("flowmq.jetstream")

_PAGE = 256  # entries per page of the LIST and NAMES answers
_TYPE = "io.nats.jetstream.api.v1.%s_response"


class JetStreamApi:
    """Answers the requests published on ``$JS.API.>`` (the router hands them in)."""

    echo = True
    permissions = None

    def __init__(self, service):
        self.service = service
        self.broker = service.broker
        self.total = 0
        self.errors = 0
        self._routes = {
            ("INFO",): (self.account_info, "account_info"),
            ("STREAM", "CREATE"): (self.stream_create, "stream_create"),
            ("STREAM", "UPDATE"): (self.stream_update, "stream_update"),
            ("STREAM", "INFO"): (self.stream_info, "stream_info"),
            ("STREAM", "DELETE"): (self.stream_delete, "stream_delete"),
            ("STREAM", "NAMES"): (self.stream_names, "stream_names"),
            ("STREAM", "LIST"): (self.stream_list, "stream_list"),
            ("STREAM", "PURGE"): (self.stream_purge, "stream_purge"),
            ("STREAM", "MSG", "GET"): (self.stream_msg_get, "stream_msg_get"),
            ("STREAM", "MSG", "DELETE"): (self.stream_msg_delete, "stream_msg_delete"),
            ("CONSUMER", "CREATE"): (self.consumer_create, "consumer_create"),
            ("CONSUMER", "DURABLE", "CREATE"): (self.consumer_durable_create, "consumer_create"),
            ("CONSUMER", "INFO"): (self.consumer_info, "consumer_info"),
            ("CONSUMER", "DELETE"): (self.consumer_delete, "consumer_delete"),
            ("CONSUMER", "NAMES"): (self.consumer_names, "consumer_names"),
            ("CONSUMER", "LIST"): (self.consumer_list, "consumer_list"),
        }

    # -- dispatch -----------------------------------------------------------------

    def deliver(self, message, subscription) -> None:
        # The tokens as the client wrote them (a filter subject's '>' included).
        tokens = [TOPIC_LEVEL.decode(level) for level in message.topic.split(SEPARATOR)[2:]]
        reply = message.reply_to
        if tokens[:2] == ["DIRECT", "GET"] or tokens[:3] == ["CONSUMER", "MSG", "NEXT"]:
            if reply is not None:
                try:
                    if tokens[0] == "DIRECT":
                        self.direct_get(tokens[2:], message.payload, reply)
                    else:
                        self.msg_next(tokens[3:], message.payload, reply)
                except Exception:  # a bug must cost one request, not the requester's connection
                    log.failure("JetStream API request on {topic} failed", topic=message.topic)
            return
        if reply is None:
            return  # nobody to answer (nats-server ignores such requests too)
        self.total += 1
        for length in (3, 2, 1):
            route = self._routes.get(tuple(tokens[:length]))
            if route is not None:
                handler, kind = route
                args = tokens[length:]
                break
        else:
            handler, kind, args = None, "error", ()
        try:
            if handler is None:
                raise ApiError(errors.BAD_REQUEST)
            document = handler(args, message.payload)
        except ApiError as e:
            self.errors += 1
            document = {"error": e.as_json()}
        except Exception as e:  # a bug must cost one request, not the requester's connection
            log.failure("JetStream API request on {topic} failed", topic=message.topic)
            self.errors += 1
            document = {"error": ApiError(errors.INTERNAL, err=type(e).__name__).as_json()}
        document["type"] = _TYPE % kind
        self.service.reply(reply, document)

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
        if len(args) != 1:
            raise ApiError(errors.BAD_REQUEST)
        stream = self.service.streams.get(args[0])
        if stream is None:
            raise ApiError(errors.STREAM_NOT_FOUND)
        return stream

    def _consumer(self, args):
        if len(args) != 2:
            raise ApiError(errors.BAD_REQUEST)
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
        config = self._named_stream_config(args, payload)
        existing = self.service.streams.get(config["name"])
        if existing is not None:
            if existing.config != config:
                raise ApiError(errors.STREAM_NAME_EXISTS)
            return existing.info()
        if len(self.service.streams) >= self.service.settings.max_streams:
            raise ApiError(errors.MAX_STREAMS)
        self.service.account.check_reservation(config, self.service.streams.values(), creating=True)
        self._check_overlap(config)
        info = self.service.create_stream(config).info()
        info["did_create"] = True
        return info

    def stream_update(self, args, payload) -> dict:
        config = self._named_stream_config(args, payload)
        stream = self._stream(args)
        old = stream.config
        for key in ("storage", "retention"):
            if old[key] != config[key]:
                raise ApiError(errors.STREAM_UPDATE, err="stream configuration update can not change %s" % key)
        self.service.account.check_reservation(config, self.service.streams.values(), creating=False)
        self._check_overlap(config)
        self.service.update_stream(stream, config)
        return stream.info()

    def _named_stream_config(self, args, payload) -> dict:
        if len(args) != 1:
            raise ApiError(errors.BAD_REQUEST)
        body = self._body(payload, required=True)
        if body.get("name") not in (None, args[0]):
            raise ApiError(errors.STREAM_NAME_MISMATCH)
        body["name"] = args[0]
        return stream_config(body)

    def _check_overlap(self, config) -> None:
        """No subject may overlap another stream's (the stream's own old ones
        in ``service.subjects`` have its name as owner, so they do not count)."""
        name = config["name"]
        mine = FilterTrie((topic_filter, name) for topic_filter in topic_filters(config["subjects"]))
        for ours, theirs in overlaps(mine, self.service.subjects, errors.STREAM_INVALID_CONFIG):
            if distinct_owners(ours, theirs):
                raise ApiError(errors.STREAM_SUBJECT_OVERLAP)

    def stream_info(self, args, payload) -> dict:
        stream = self._stream(args)
        return stream.info(_subject_field(self._body(payload), "subjects_filter"))

    def stream_delete(self, args, payload) -> dict:
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
            for _wanted, owners in overlapping(wanted, subjects, budget(subjects.levels + wanted.levels)):
                names.update(owners)
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
        seq, keep, subject = body.get("seq"), body.get("keep"), _subject_field(body, "filter")
        if seq and keep:
            raise ApiError(errors.BAD_REQUEST)
        for value in (seq, keep):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ApiError(errors.BAD_REQUEST)
        topic_filter = _topic_filter(subject) if subject else None
        purged = stream.store.purge(topic_filter, up_to_seq=seq or None, keep=keep or None)
        self.service.purged(stream)
        return {"success": True, "purged": purged}

    def _find_message(self, stream, body):
        """The stored message a MSG.GET / DIRECT.GET body names, or ApiError."""
        seq = body.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise ApiError(errors.BAD_REQUEST)
        last, following = _subject_field(body, "last_by_subj"), _subject_field(body, "next_by_subj")
        if last:
            stored = stream.store.last_message(_topic_filter(last))
        elif following:
            stored = stream.store.next_message(seq or 1, _topic_filter(following))
        elif seq:
            stored = stream.store.get(seq)
        else:
            raise ApiError(errors.BAD_REQUEST)
        if stored is None:
            raise ApiError(errors.NO_MESSAGE_FOUND)
        return stored

    def stream_msg_get(self, args, payload) -> dict:
        stream = self._stream(args)
        stored = self._find_message(stream, self._body(payload, required=True))
        message = {"subject": topic_to_subject(stored.topic).decode(), "seq": stored.seq,
                   "data": b64(stored.payload), "time": rfc3339(stored.timestamp)}
        if stored.headers:
            message["hdrs"] = b64(header_block(stored.headers))
        return {"message": message}

    def stream_msg_delete(self, args, payload) -> dict:
        stream = self._stream(args)
        if stream.config["deny_delete"]:
            raise ApiError(errors.MSG_DELETE_FAILED, err="message delete not permitted")
        body = self._body(payload, required=True)
        seq = body.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0:
            raise ApiError(errors.BAD_REQUEST)
        if not stream.store.delete(seq, erase=not body.get("no_erase")):
            raise ApiError(errors.SEQUENCE_NOT_FOUND, seq=seq)
        return {"success": True}

    def direct_get(self, tokens, payload, reply) -> None:
        """$JS.API.DIRECT.GET.<stream>[.<subject>]: the message itself, with
        Nats-Stream/-Subject/-Sequence/-Time-Stamp headers, or a status."""
        stream = self.service.streams.get(tokens[0]) if tokens else None
        try:
            if stream is None:
                raise ApiError(errors.STREAM_NOT_FOUND)
            body = {"last_by_subj": ".".join(tokens[1:])} if len(tokens) > 1 else self._body(payload, True)
            stored = self._find_message(stream, body)
        except ApiError as e:
            if e.code == 404:
                status = status_message(reply, b"404", b"Message Not Found")
            else:
                status = status_message(reply, b"408", b"Bad Request")
            self.broker.publish(status)
            return
        headers = tuple(stored.headers or ()) + (
            ("Nats-Stream", stream.name), ("Nats-Subject", topic_to_subject(stored.topic).decode()),
            ("Nats-Sequence", str(stored.seq)), ("Nats-Time-Stamp", rfc3339(stored.timestamp)))
        self.broker.publish(Message(reply, stored.payload, headers))

    # -- consumers ----------------------------------------------------------------

    def consumer_create(self, args, payload) -> dict:
        """CONSUMER.CREATE.<stream>[.<name>[.<filter subject>]]."""
        if not args:
            raise ApiError(errors.BAD_REQUEST)
        stream, body, request = self._consumer_request(args[0], payload)
        if len(args) >= 2:
            name = args[1]
            if request.get("name") not in (None, "", name) or request.get("durable_name") not in (None, "", name):
                raise ApiError(errors.CONSUMER_NAME_MISMATCH)
            request.setdefault("name", name)
            if len(args) > 2:
                filter_subject = ".".join(args[2:])
                if request.get("filter_subject") not in (None, "", filter_subject):
                    raise ApiError(errors.CONSUMER_FILTER_MISMATCH)
                request["filter_subject"] = filter_subject
        return self._create_consumer(stream, request, body.get("action", ""))

    def consumer_durable_create(self, args, payload) -> dict:
        """CONSUMER.DURABLE.CREATE.<stream>.<durable> (nats-server < 2.9's form)."""
        if len(args) != 2:
            raise ApiError(errors.CONSUMER_DURABLE_NOT_IN_SUBJECT)
        stream, body, request = self._consumer_request(args[0], payload)
        if request.get("durable_name") not in (None, "", args[1]):
            raise ApiError(errors.CONSUMER_NAME_MISMATCH)
        request["durable_name"] = args[1]
        return self._create_consumer(stream, request, body.get("action", ""))

    def _consumer_request(self, stream_name: str, payload: bytes):
        """(stream, request body, its "config") of a consumer create request."""
        stream = self._stream([stream_name])
        body = self._body(payload, required=True)
        request = body.get("config")
        if not isinstance(request, dict):
            raise ApiError(errors.CONSUMER_CONFIG_REQUIRED)
        if body.get("stream_name") not in (None, stream.name):
            raise ApiError(errors.STREAM_NAME_MISMATCH)
        return stream, body, request

    def _create_consumer(self, stream, request: dict, action: str) -> dict:
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

    def msg_next(self, tokens, payload, reply) -> None:
        """CONSUMER.MSG.NEXT.<stream>.<consumer>: a pull request."""
        stream = self.service.streams.get(tokens[0]) if len(tokens) == 2 else None
        consumer = stream.consumers.get(tokens[1]) if stream is not None else None
        if consumer is None or consumer.deliver_topic is not None:
            self.broker.publish(status_message(reply, b"409", b"Consumer Deleted" if consumer is None
                                               else b"Consumer is push based"))
            return
        consumer.request_next(reply, payload)


def _subject_field(body: dict, key: str):
    """A request field that holds a subject: None, or a string."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(errors.BAD_REQUEST)
    return value


def _topic_filter(subject: str) -> str:
    try:
        return filter_to_topic_filter(subject)
    except InvalidTopic:
        raise ApiError(errors.BAD_REQUEST) from None


def _offset(body: dict) -> int:
    offset = body.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ApiError(errors.BAD_REQUEST)
    return offset
