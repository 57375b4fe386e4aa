"""JetStream for the load generators: the $JS.API requests of the coordinator,
the PubAck and pull-delivery scanners (sans-IO), and the worker processes of
the js-pub-sync, js-pub-async and js-pull scenarios.

Everything speaks raw NATS over a plain socket, like the core scenarios, so
that the figures are the server's and not a client library's:

- ``sync_publisher`` publishes one message at a time with a reply subject
  ``<inbox>.<n>`` and waits for its PubAck (what ``js.publish`` does) and
  records each round trip.
- ``async_publisher`` keeps up to ``window`` messages without PubAck in
  flight, as nats.go's ``PublishAsync`` (4,000 in flight by default) and
  nats-py's ``publish_async`` do. A raw generator rather than nats-py's
  ``publish_async``: nats-py spends tens of microseconds of Python per
  message on futures and inbox bookkeeping, which would cap the figure near
  what the client can do (about 50,000 msgs/s) instead of what the server can;
  here a send of many pre-formatted PUB frames and one regular-expression pass
  over each read of PubAcks cost about a microsecond per message.
- ``puller`` consumes a durable pull consumer (ack policy explicit) the way
  nats-py's ``fetch(batch)`` loop does: one pull request of ``batch``
  messages at a time, the next one as soon as the batch is in, and an
  ``+ACK`` for every message (sent together for each read).

Every PubAck is matched to its message by the reply subject: message n of a
fresh stream must be stored at seq n + 1 (seqs increase in publish order, no
gaps, no duplicates). Every delivered message is matched by the stream seq of
its ``$JS.ACK`` reply subject: each seq 1..count exactly once, none redelivered.
"""

from __future__ import annotations

import array
import json
import os
import re
import select
import socket
import time

from flowmq.bench import protocol
from flowmq.bench.worker import Envelope

_POLL = 0.25       # seconds a blocked receive waits before looking at the clock again
_RECV = 262144
_ACK_TAIL = b" 4\r\n+ACK\r\n"
# MSG <inbox>.<n> <sid> <size>\r\n{..."seq":<seq>...}  (a PubAck line holds no CRLF)
_PUBACK = re.compile(rb'MSG [^ \r\n]*\.(\d+) [^ \r\n]+ \d+\r\n\{[^\r\n]*?"seq":(\d+)')
_MAX_NOTES = 10    # problems described one by one (the rest are counted)


class JsApiError(protocol.BenchError):
    """A $JS.API request answered with an error."""

    def __init__(self, subject: str, error: dict):
        self.code = error.get("code")
        self.err_code = error.get("err_code")
        self.description = error.get("description", "")
        protocol.BenchError.__init__(self, "%s: %s (code %s, err_code %s)" % (
            subject, self.description, self.code, self.err_code))


def new_inbox(tag: str) -> bytes:
    return b"_INBOX.bench%s%d_%s" % (tag.encode(), os.getpid(), os.urandom(4).hex().encode())


def stream_config(name: str, subject: str) -> dict:
    """A file-storage stream on one subject, with nats-server's default limits."""
    return {"name": name, "subjects": [subject], "storage": "file", "retention": "limits",
            "discard": "old", "num_replicas": 1}


def consumer_config(name: str) -> dict:
    """A durable pull consumer that wants every message acknowledged on its own."""
    return {"durable_name": name, "deliver_policy": "all", "ack_policy": "explicit",
            "replay_policy": "instant"}


class JsApi:
    """One connection for $JS.API requests (the coordinator's): each request
    gets its own reply subject under one inbox subscription."""

    def __init__(self, host: str, port: int, timeout: float):
        self.timeout = timeout
        self.inbox = new_inbox("api")
        self.sock = protocol.connect(host, port, timeout)
        try:
            self.parser = protocol.handshake(self.sock, protocol.sub_line(self.inbox + b".*", b"1"),
                                             timeout, connect=protocol.JS_CONNECT)
        except Exception:
            self.sock.close()
            raise
        self._early = self.parser.rest()
        self._n = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, subject: str, body=None) -> dict:
        """The JSON answer; JsApiError for an answer with an ``error``."""
        self._n += 1
        reply = self.inbox + b".%d" % self._n
        payload = json.dumps(body).encode() if body is not None else b""
        self.sock.sendall(protocol.pub_frame(subject.encode(), payload, reply))
        deadline = time.monotonic() + self.timeout
        data, self._early = self._early, b""
        for _ in range(1000000):
            for op in self.parser.feed(data):
                kind = op[0]
                if kind == "PING":
                    self.sock.sendall(protocol.PONG)
                elif kind == "-ERR":
                    raise protocol.BenchError("server said -ERR '%s'" % op[1])
                elif kind == "HMSG" and op[1] == reply:
                    status = op[4][9:12]
                    if status == b"503":
                        raise protocol.BenchError("%s: no responders (is JetStream enabled on the server?)" % subject)
                    raise protocol.BenchError("%s: status %r" % (subject, op[4].split(b"\r\n", 1)[0]))
                elif kind == "MSG" and op[1] == reply:
                    self.parser.rest()
                    try:
                        document = json.loads(op[4])
                    except ValueError:
                        raise protocol.BenchError("%s: answer is not JSON: %r" % (subject, op[4][:200]))
                    if isinstance(document, dict) and isinstance(document.get("error"), dict):
                        raise JsApiError(subject, document["error"])
                    return document
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                raise protocol.BenchError("connection closed by the server")
        raise protocol.BenchError("%s: no answer within %.0f s" % (subject, self.timeout))

    def delete_stream(self, name: str, missing_ok: bool = False) -> bool:
        try:
            self.request("$JS.API.STREAM.DELETE.%s" % name)
            return True
        except JsApiError as e:
            if missing_ok and e.code == 404:
                return False
            raise

    def fresh_stream(self, name: str, subject: str) -> dict:
        """Create the stream; one left over by an earlier (interrupted) run of
        the tool is deleted first, so that seqs start at 1."""
        self.delete_stream(name, missing_ok=True)
        return self.request("$JS.API.STREAM.CREATE.%s" % name, stream_config(name, subject))

    def stream_info(self, name: str) -> dict:
        return self.request("$JS.API.STREAM.INFO.%s" % name)

    def create_consumer(self, stream: str, name: str) -> dict:
        return self.request("$JS.API.CONSUMER.CREATE.%s.%s" % (stream, name),
                            {"stream_name": stream, "config": consumer_config(name)})

    def consumer_info(self, stream: str, name: str) -> dict:
        return self.request("$JS.API.CONSUMER.INFO.%s.%s" % (stream, name))


# -- PubAcks ------------------------------------------------------------------------------


class AckScanner:
    """Reads the PubAcks of ``count`` messages published with reply subjects
    ``<inbox>.0`` .. ``<inbox>.<count - 1>`` to a fresh stream (sans-IO).

    ``feed(data)`` takes what the socket gave and returns what the client owes
    the server (PONGs). Complete PubAcks are found with one regular-expression
    pass per read; a read that holds anything else (an error answer) goes
    through ``protocol.MsgParser`` instead. ``answered`` counts the messages
    with an answer, ``acked`` those stored, ``in_order`` those stored at seq
    n + 1; ``fatal`` is set for answers that end the run (-ERR, 503 No
    Responders: no stream on the subject).
    """

    def __init__(self, count: int):
        self.count = count
        self.seen = bytearray(count)
        self.answered = 0
        self.acked = 0
        self.in_order = 0
        self.wrong_seq = 0
        self.duplicates = 0
        self.failed = 0
        self.other = 0
        self.pings = 0
        self.notes: list = []
        self.fatal = None
        self._rest = b""

    def _note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(text)

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data if self._rest else data
        end = buf.rfind(b"\r\n")
        if end < 0:
            self._rest = buf
            return b""
        before = buf.rfind(b"\r\n", 0, end)
        start = before + 2 if before >= 0 else 0
        # A MSG line as the last complete line: its payload is still to come.
        cut = start if (buf.startswith(b"MSG ", start) or buf.startswith(b"HMSG ", start)) else end + 2
        chunk, self._rest = buf[:cut], buf[cut:]
        if not chunk:
            return b""
        if b"HMSG " in chunk or b"-ERR" in chunk:
            return self._slow(chunk)
        pairs = _PUBACK.findall(chunk)
        if len(pairs) != chunk.count(b"MSG "):
            return self._slow(chunk)
        seen = self.seen
        count = self.count
        ok = 0
        for n_text, seq_text in pairs:
            n = int(n_text)
            if n < count and not seen[n]:
                seen[n] = 1
                ok += 1
                if int(seq_text) != n + 1:
                    self._wrong(n, int(seq_text))
            else:
                self._repeat(n)
        self.answered += ok
        self.acked += ok
        self.in_order = self.acked - self.wrong_seq
        pings = chunk.count(b"PING\r\n")
        self.pings += pings
        return protocol.PONG * pings

    def _wrong(self, n: int, seq: int) -> None:
        self.wrong_seq += 1
        self._note("message %d stored at seq %d, expected %d" % (n, seq, n + 1))

    def _repeat(self, n: int) -> None:
        if n < self.count:
            self.duplicates += 1
            self._note("a second PubAck for message %d" % n)
        else:
            self.other += 1
            self._note("a PubAck for message %d, which was not sent" % n)

    def _slow(self, chunk: bytes) -> bytes:
        """One operation at a time: error answers, statuses, -ERR."""
        parser = protocol.MsgParser()
        out = []
        ops = parser.feed(chunk)
        self._rest = parser.rest() + self._rest  # an operation cut short (a header message's lines)
        for op in ops:
            kind = op[0]
            if kind == "PING":
                self.pings += 1
                out.append(protocol.PONG)
            elif kind == "-ERR":
                self.fatal = "server said -ERR '%s'" % op[1]
            elif kind == "HMSG":
                status = op[4].split(b"\r\n", 1)[0].decode("utf-8", "replace")
                if op[4][9:12] == b"503":
                    self.fatal = "no responders on the subject (%s): no stream takes it" % status
                else:
                    self.other += 1
                    self._note("unexpected header message %s on %s" % (status, op[1].decode("utf-8", "replace")))
            elif kind == "MSG":
                self._one(op[1], op[4])
        self.in_order = self.acked - self.wrong_seq
        return b"".join(out)

    def _one(self, subject: bytes, payload: bytes) -> None:
        try:
            n = int(subject.rsplit(b".", 1)[1])
            document = json.loads(payload)
        except (ValueError, IndexError):
            self.other += 1
            self._note("unexpected message on %r: %r" % (subject, payload[:200]))
            return
        if n >= self.count or self.seen[n]:
            self._repeat(n)
            return
        self.seen[n] = 1
        self.answered += 1
        error = document.get("error") if isinstance(document, dict) else None
        if error is not None or not isinstance(document, dict) or not isinstance(document.get("seq"), int):
            self.failed += 1
            self._note("message %d refused: %s" % (n, json.dumps(error if error is not None else document)))
            return
        self.acked += 1
        if document["seq"] != n + 1:
            self._wrong(n, document["seq"])

    def summary(self) -> dict:
        return {"answered": self.answered, "acked": self.acked, "acked_in_order": self.in_order,
                "wrong_seq": self.wrong_seq, "duplicate_acks": self.duplicates, "refused": self.failed,
                "unexpected": self.other, "pings": self.pings, "notes": list(self.notes)}

    def problems(self) -> list:
        """What went wrong, as error lines."""
        return _problems(self.fatal, self.notes, (
            ("PubAcks with a wrong seq", self.wrong_seq), ("duplicate PubAcks", self.duplicates),
            ("messages refused by the server", self.failed), ("unexpected answers", self.other)))


def publish_window(sock, scanner: AckScanner, subject: bytes, inbox: bytes, size: int, window: int,
                   batch_bytes: int, idle_timeout: float, deadline: float, progress=None, stop=None) -> dict:
    """Publish ``scanner.count`` messages with up to ``window`` PubAcks
    outstanding; returns the times of the first send and of the last PubAck.
    Raises BenchError when the server falls silent for ``idle_timeout``."""
    count = scanner.count
    head = b"PUB %s %s." % (subject, inbox)
    tail = b" %d\r\n%s\r\n" % (size, protocol.payload(size))
    per_send = max(1, min(window, batch_bytes // (len(head) + len(tail) + 6)))
    sent = 0
    start = time.monotonic()
    last_ack = None
    silent_since = start
    max_outstanding = 0
    sock.settimeout(_POLL)
    for _ in range(10 * count + int((deadline - start) / _POLL) + 100):
        if scanner.answered >= count or scanner.fatal:
            break
        outstanding = sent - scanner.answered
        data = None
        if sent < count and outstanding < window:
            k = min(window - outstanding, per_send, count - sent)
            sock.sendall(b"".join([head + b"%d" % n + tail for n in range(sent, sent + k)]))
            sent += k
            if sent - scanner.answered > max_outstanding:
                max_outstanding = sent - scanner.answered
            if select.select([sock], [], [], 0)[0]:
                data = sock.recv(_RECV)
        else:
            try:
                data = sock.recv(_RECV)
            except socket.timeout:
                pass
        now = time.monotonic()
        if data is not None:
            if not data:
                raise protocol.BenchError("connection closed by the server after %d of %d PubAcks"
                                          % (scanner.answered, count))
            before = scanner.answered
            owed = scanner.feed(data)
            if owed:
                sock.sendall(owed)
            if scanner.answered != before:
                last_ack = now
                silent_since = now
                if progress is not None:
                    progress(scanner.answered)
        elif sent - scanner.answered >= window or sent >= count:
            if now - silent_since > idle_timeout:
                raise protocol.BenchError("no PubAck for %.0f s after %d of %d (%d sent)"
                                          % (idle_timeout, scanner.answered, count, sent))
        if now > deadline:
            raise protocol.BenchError("ran out of time (--max-time) after %d of %d PubAcks"
                                      % (scanner.answered, count))
        if stop is not None and stop.is_set():
            raise protocol.BenchError("stopped after %d of %d PubAcks" % (scanner.answered, count))
    return {"start": start, "last_ack": last_ack, "sent": sent, "max_outstanding": max_outstanding}


# -- pull deliveries ------------------------------------------------------------------------


class PullScanner:
    """Reads what a pull consumer delivers for the pull requests of one
    connection (sans-IO): messages (MSG with a ``$JS.ACK`` reply subject) and
    the status messages that end a request early (HMSG on the request's
    reply subject ``<inbox>.<k>``).

    ``feed(data)`` returns the bytes to send back: an ``+ACK`` for every
    message, PONGs. ``owed`` is what the current request still has to
    deliver; it drops to 0 when the batch is in or a status ends the request.
    """

    def __init__(self, count: int, size: int, inbox: bytes):
        self.count = count
        self.size = size
        self.inbox_prefix = inbox + b"."
        self.seen = bytearray(count + 1)  # by stream seq
        self.received = 0       # distinct stream seqs 1..count
        self.duplicates = 0
        self.redelivered = 0
        self.other = 0
        self.pings = 0
        self.pongs = 0
        self.statuses: dict = {}  # "408 Request Timeout" -> times
        self.notes: list = []
        self.fatal = None
        self.owed = 0
        self.request = 0         # number of the current request (its reply subject)
        self._buf = b""

    def _note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(text)

    def requested(self, number: int, batch: int) -> None:
        self.request = number
        self.owed = batch

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        out = []
        seen = self.seen
        count = self.count
        received = self.received
        for _ in range(end + 1):
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > protocol.MAX_LINE:
                    raise protocol.BenchError("protocol line from server longer than %d bytes" % protocol.MAX_LINE)
                break
            if buf.startswith(b"MSG ", pos):
                parts = buf[pos + 4:eol].split(b" ")
                size = int(parts[-1])
                stop = eol + 2 + size
                if stop + 2 > end:
                    break
                reply = parts[2] if len(parts) == 4 else b""
                tokens = reply.split(b".")
                if len(tokens) == 9 and reply.startswith(b"$JS.ACK."):
                    deliveries, seq = tokens[4], int(tokens[5])  # v1: $JS.ACK.<stream>.<consumer>.<n>.<sseq>...
                elif len(tokens) >= 11 and reply.startswith(b"$JS.ACK."):
                    deliveries, seq = tokens[6], int(tokens[7])  # v2: $JS.ACK.<domain>.<hash>.<stream>...
                else:
                    self.other += 1
                    self._note("unexpected message on %r" % parts[0])
                    pos = stop + 2
                    continue
                out.append(b"PUB ")
                out.append(reply)
                out.append(_ACK_TAIL)
                self.owed -= 1
                if 0 < seq <= count and not seen[seq]:
                    seen[seq] = 1
                    received += 1
                    if size != self.size:
                        self.other += 1
                        self._note("message seq %d has %d bytes, expected %d" % (seq, size, self.size))
                else:
                    self.duplicates += 1
                    self._note("message seq %d delivered again (delivery %s)" % (seq, deliveries.decode()))
                if deliveries != b"1":
                    self.redelivered += 1
                pos = stop + 2
            elif buf.startswith(b"HMSG ", pos):
                parts = buf[pos + 5:eol].split(b" ")
                size = int(parts[-1])
                stop = eol + 2 + size
                if stop + 2 > end:
                    break
                self._status(parts[0], buf[eol + 2:stop])
                pos = stop + 2
            else:
                line = buf[pos:eol]
                pos = eol + 2
                if line == b"PING":
                    self.pings += 1
                    out.append(protocol.PONG)
                elif line == b"PONG":
                    self.pongs += 1
                elif line.startswith(b"-ERR"):
                    self.fatal = "server said %s" % line.decode("utf-8", "replace")
        self.received = received
        self._buf = buf[pos:]
        return b"".join(out)

    def _status(self, subject: bytes, raw: bytes) -> None:
        line = raw.split(b"\r\n", 1)[0]  # NATS/1.0 408 Request Timeout
        code = line[9:12]
        text = line[9:].decode("utf-8", "replace")
        self.statuses[text] = self.statuses.get(text, 0) + 1
        if not subject.startswith(self.inbox_prefix):
            self.other += 1
            self._note("unexpected status %s on %r" % (text, subject))
            return
        if subject != self.inbox_prefix + b"%d" % self.request:
            return  # the end of an earlier request: nothing owed any more
        if code in (b"408", b"404"):
            self.owed = 0  # expired (or nothing there yet): the client asks again
        elif code == b"100":
            pass  # heartbeat
        else:
            self.owed = 0
            self.fatal = "pull request ended with status %s" % text

    def summary(self) -> dict:
        return {"received": self.received, "duplicates": self.duplicates, "redelivered": self.redelivered,
                "unexpected": self.other, "statuses": dict(self.statuses), "pings": self.pings,
                "notes": list(self.notes)}

    def problems(self) -> list:
        """What went wrong, as error lines."""
        return _problems(self.fatal, self.notes, (
            ("messages delivered twice", self.duplicates), ("redeliveries", self.redelivered),
            ("unexpected messages", self.other)))


# -- the worker processes ---------------------------------------------------------------------


def _publisher_connection(env, opts, count):
    """A publisher's connection: its PubAck inbox, socket, AckScanner and
    the bytes that came after the handshake."""
    inbox = new_inbox("js")
    sock = env.connect(opts["host"], opts["port"])
    parser = protocol.handshake(sock, protocol.sub_line(inbox + b".*", b"1"), opts["setup_timeout"],
                                connect=protocol.JS_CONNECT)
    return inbox, sock, AckScanner(count), parser.rest()


def sync_publisher(slot, opts, subject, size, count, barrier, stop, counters, results):
    """Publish ``count`` messages one at a time, each after the PubAck of the one before."""
    result = {"role": "js-pub", "slot": slot, "sent": 0, "start": None, "end": None,
              "latencies": b"", "errors": []}
    with Envelope("publisher", barrier, results, result) as env:
        inbox, sock, scanner, early = _publisher_connection(env, opts, count)
        head = b"PUB %s %s." % (subject, inbox)
        tail = b" %d\r\n%s\r\n" % (size, protocol.payload(size))
        latencies = array.array("d")
        timeout = min(5.0, opts["idle_timeout"])
        env.start(opts["setup_timeout"])
        if early:
            sock.sendall(scanner.feed(early))
        deadline = time.monotonic() + opts["max_time"]
        result["start"] = time.monotonic()
        try:
            for n in range(count):
                t0 = time.perf_counter()
                sock.sendall(head + b"%d" % n + tail)
                result["sent"] = n + 1
                got = _wait_answer(sock, scanner, n + 1, t0 + timeout)
                if got is None:
                    raise protocol.BenchError("no PubAck for message %d within %.1f s" % (n, timeout))
                latencies.append((got - t0) * 1e6)
                counters[slot] = scanner.answered
                if scanner.fatal:
                    break
                if not n & 255 and (time.monotonic() > deadline or stop.is_set()):
                    raise protocol.BenchError("stopped after %d of %d messages: %s" % (
                        n + 1, count, "ran out of time (--max-time)" if not stop.is_set() else "asked to stop"))
        finally:
            result["end"] = time.monotonic()
            result["latencies"] = latencies.tobytes()
            result.update(scanner.summary())
            result["errors"].extend("publisher: %s" % p for p in scanner.problems())


def _problems(fatal, notes, counts) -> list:
    """Error lines: the fatal one, then each non-zero ``(what, count)``, then the notes."""
    out = [fatal] if fatal else []
    out.extend("%d %s" % (value, what) for what, value in counts if value)
    out.extend(notes)
    return out


def _wait_answer(sock, scanner: AckScanner, want: int, deadline: float):
    """The perf_counter time ``scanner.answered`` reached ``want``, or None."""
    for data, now in protocol.receive_until(sock, deadline):
        owed = scanner.feed(data)
        if owed:
            sock.sendall(owed)
        if scanner.answered >= want or scanner.fatal:
            return now
    return None


def async_publisher(slot, opts, subject, size, count, window, barrier, stop, counters, results):
    """Publish ``count`` messages with up to ``window`` PubAcks outstanding."""
    result = {"role": "js-pub", "slot": slot, "sent": 0, "start": None, "end": None,
              "max_outstanding": 0, "errors": []}
    with Envelope("publisher", barrier, results, result) as env:
        inbox, sock, scanner, early = _publisher_connection(env, opts, count)
        env.start(opts["setup_timeout"])
        if early:
            sock.sendall(scanner.feed(early))

        def progress(answered):
            counters[slot] = answered

        try:
            timing = publish_window(sock, scanner, subject, inbox, size, window, opts["batch_bytes"],
                                    opts["idle_timeout"], time.monotonic() + opts["max_time"], progress, stop)
            result.update(sent=timing["sent"], start=timing["start"], end=timing["last_ack"],
                          max_outstanding=timing["max_outstanding"])
        finally:
            counters[slot] = scanner.answered
            result.update(scanner.summary())
            result["errors"].extend("publisher: %s" % p for p in scanner.problems())


def puller(slot, opts, stream, consumer, size, count, batch, barrier, stop, counters, results):
    """Fetch ``count`` messages from a durable pull consumer, ``batch`` per
    pull request, acknowledging each one."""
    result = {"role": "js-pull", "slot": slot, "requests": 0, "start": None, "end": None,
              "errors": []}
    with Envelope("consumer", barrier, results, result) as env:
        inbox = new_inbox("pull")
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(sock, protocol.sub_line(inbox + b".*", b"1"), opts["setup_timeout"],
                                    connect=protocol.JS_CONNECT)
        scanner = PullScanner(count, size, inbox)
        early = parser.rest()
        head = b"PUB $JS.API.CONSUMER.MSG.NEXT.%s.%s %s." % (stream.encode(), consumer.encode(), inbox)
        # Expire like a client's fetch timeout (nats-py: 5 s): long enough never
        # to end a request the server is busy filling; a stall still ends the
        # run after --timeout without a message.
        expires = int(max(0.5, opts["idle_timeout"] / 2.0) * 1e9)
        env.start(opts["setup_timeout"])
        sock.settimeout(_POLL)
        now = time.monotonic()
        deadline = now + opts["max_time"]
        result["start"] = now
        requests = 0
        last = None
        silent_since = now
        pending = early
        try:
            for _ in range(10 * count + int(opts["max_time"] / _POLL) + 100):
                out = scanner.feed(pending) if pending else b""
                pending = b""
                if scanner.received != counters[slot]:
                    silent_since = last = now  # when the bytes that brought them came
                    counters[slot] = scanner.received
                if scanner.fatal or scanner.received >= count:
                    if out:
                        sock.sendall(out)
                    break
                if scanner.owed <= 0:
                    want = min(batch, count - scanner.received)
                    body = b'{"batch":%d,"expires":%d}' % (want, expires)
                    requests += 1
                    scanner.requested(requests, want)
                    out += head + b"%d %d\r\n%s\r\n" % (requests, len(body), body)
                if out:
                    sock.sendall(out)
                try:
                    pending = sock.recv(_RECV)
                except socket.timeout:
                    pending = None
                now = time.monotonic()
                if pending is None:
                    pending = b""
                elif not pending:
                    raise protocol.BenchError("connection closed by the server after %d of %d messages"
                                              % (scanner.received, count))
                if now - silent_since > opts["idle_timeout"]:
                    raise protocol.BenchError("nothing delivered for %.0f s after %d of %d messages"
                                              % (opts["idle_timeout"], scanner.received, count))
                if now > deadline or stop.is_set():
                    raise protocol.BenchError("stopped after %d of %d messages: %s" % (
                        scanner.received, count, "asked to stop" if stop.is_set() else "ran out of time (--max-time)"))
            # The last acks are on their way: a PING round trip makes sure the
            # server has read them before the coordinator asks for the ack floor.
            sock.sendall(protocol.PING)
            _until_pong(sock, scanner, time.monotonic() + opts["idle_timeout"] + opts["send_timeout"])
        finally:
            counters[slot] = scanner.received
            result.update(scanner.summary())
            result.update(requests=requests, end=last)
            result["errors"].extend("consumer: %s" % p for p in scanner.problems())


def _until_pong(sock, scanner: PullScanner, deadline: float) -> None:
    """Read until the PONG that answers our PING (what still comes is scanned and acked)."""
    pongs = scanner.pongs
    for _ in range(1000000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(_RECV)
        except socket.timeout:
            break
        if not data:
            raise protocol.BenchError("connection closed by the server")
        owed = scanner.feed(data)
        if owed:
            sock.sendall(owed)
        if scanner.pongs > pongs:
            return
    raise protocol.BenchError("no PONG from the server in time")
