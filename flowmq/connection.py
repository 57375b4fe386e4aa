"""What every protocol's client connection shares, whatever it speaks.

``BrokerConnection`` is the base of each protocol's Protocol class. It owns:

- the connection's life: the listener's connection limit, the TLS upgrade
  and its handshake timeout, the login through the twisted.cred portal and
  its authentication timeout, the keepalive, the graceful close, and the
  cancelling of all of them when the client goes;
- the output queue: frames are queued with ``send()`` and written in one
  ``transport.write`` per batch (the broker's WriteBatcher decides when).
  A frame around a payload of PAYLOAD_PIECE_AT bytes or more is queued
  with ``send_payload()``: its payload is not copied into the frame but
  queued as a piece of its own (the message's bytes object, shared by
  every delivery of it). A batch that holds one of GATHER_WRITE_AT bytes
  or more goes out as a sequence with one gathered write
  (``flowmq.transport``), so such a payload is copied once between the
  socket it came from and the kernel: out of the read buffer. Smaller
  batches are joined (cheaper than a gathered write of small pieces), and
  a TLS connection joins what it encrypts. On PyPy the frames of a run
  of PUBs for one subscriber are made in a reused output buffer instead
  (``add_run_frames``, flowmq.rawbytes), written before the frames
  queued after them;
- the slow-consumer rules: the connection is a streaming producer of its
  transport, so Twisted pauses it when the socket cannot take more (its
  output is *backed up*); output then waits in the queue, and while it
  waits the connection checks every ``TICK`` seconds how much its client
  took (what the client's TCP acknowledged, ``peer_progress()`` of
  ``flowmq.transport``). The client is cut off as a slow consumer when more
  than ``max_pending`` bytes wait, when it took nothing for
  ``stall_deadline`` seconds, or when its output stays backed up for
  ``write_deadline`` seconds (it takes data but cannot keep up);
- flow control: while its output is backed up with more than
  min(``max_pending``/4, ``HOLD_PUBLISHERS_AT``) bytes waiting, a
  connection holds back the reading of the connections that publish to it
  (``hold_input`` / ``release_input`` on the message's origin), so that
  fast publishers slow down to what a subscriber that is reading can take,
  instead of cutting it off. Only a client that took bytes within the last
  ``HOLD_TICKS`` ticks holds anybody: one that stops reading releases its
  publishers after 0.5 s, and is cut off alone. A protocol holds
  publishers for its own reasons with ``hold`` too (MQTT: a long QoS 1/2
  queue), and learns with ``input_released`` that its own input goes on.

Its factory is a ``flowmq.listener.ConnectionRegistry`` (broker, clock,
limits, security, the listener's TLS, client ids). A subclass speaks the
protocol's own frames through these hooks:

- ``greet()``: the first frame, sent on connect (NATS: INFO);
- ``farewell(reason)``: the last frame to a client closed for one of the
  ``CLOSE_*`` reasons below (NATS: its -ERR text);
- ``keepalive_frame()``: what the server sends every ``ping_interval``
  (NATS: PING); ``keepalive_answered()`` when the client proves it lives.
  A protocol whose clients ping instead (MQTT) has no keepalive frame and
  keeps its own time;
- ``logged_in()``: after a login (``log_in(credentials, who)``) succeeded;
- ``stop_consuming()``: drop every subscription;

and it calls ``hold_publisher(message.origin)`` after each delivery it
queues.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from flowmq import rawbytes
from flowmq.auth.credentials import CertificateCredentials, presented_by
from flowmq.auth.permissions import UNRESTRICTED
from flowmq.auth.realm import IFlowMQSession
from flowmq.logs import logger
from flowmq.tls import peer_identity

#: A payload of at least this many bytes is queued by reference, as a
#: piece of its own after its frame's head (``send_payload``), instead of
#: being copied into a frame of its own for each delivery.
PAYLOAD_PIECE_AT = 256
#: A batch that holds a payload of at least this many bytes is written as
#: a sequence (one sendmsg, no join); one of smaller pieces only is joined
#: and written as one buffer, which costs less than a sendmsg of many
#: small pieces. Both measured in docs/PERFORMANCE.md ("Payload bytes").
GATHER_WRITE_AT = 8192
#: While no connection in a batch has this much output waiting, a socket
#: that has more input is read on in the same batch (flowmq.transport):
#: small writes (a queue group's shares of a read) then become larger ones.
READ_ON_BELOW = 32768
#: Output above which a backed-up connection starts holding its publishers.
HOLD_PUBLISHERS_AT = 1 << 20
#: Seconds between two looks at what a backed-up client took.
TICK = 0.1
#: A backed-up connection holds its publishers only while its client took
#: bytes within the last HOLD_TICKS ticks (0.5 s): long enough for a reader
#: that is descheduled for a moment, short enough that one that stopped
#: reading stalls the others for at most that long.
HOLD_TICKS = 5

# Why the connection base closes a client; ``farewell(reason)`` says it in the protocol's words.
CLOSE_SLOW_CONSUMER = "slow consumer"
CLOSE_TOO_MANY_CONNECTIONS = "too many connections"
CLOSE_AUTH_TIMEOUT = "authentication timeout"
CLOSE_LOGIN_REFUSED = "login refused"
CLOSE_STALE = "stale connection"
CLOSE_SHUTDOWN = "server shutting down"


@implementer(IPushProducer, IHandshakeListener)
class BrokerConnection(Protocol, metaclass=ABCMeta):
    """A client connection of any protocol: life cycle, login, keepalive,
    output queue, slow consumers, flow control."""

    log = logger("flowmq.connection")

    def __init__(self, factory):
        self.factory = factory
        self.broker = factory.broker
        self.clock = factory.clock
        self.client_id = factory.next_client_id()
        self.peer = "?"
        #: The logged-in user's Permissions, None when unrestricted; the
        #: broker checks publishes, subscriptions and deliveries against it.
        self.permissions = None
        limits = factory.limits
        self._limits = limits
        self._batcher = self.broker.batcher
        self._max_pending = limits.max_pending
        self._hold_at = min(limits.max_pending // 4, HOLD_PUBLISHERS_AT)
        self._write_deadline = limits.write_deadline
        # Counted in ticks, not read off the clock: a broker that did not run
        # for a while (a loaded machine) must not blame its clients for it.
        self._stall_ticks = max(1, round(limits.stall_deadline / TICK))
        self._out: list = []
        self._out_buffer = None  # a flowmq.rawbytes.OutputBuffer with frames that go before _out
        self._gathered = False  # _out holds a payload of GATHER_WRITE_AT bytes or more: write a sequence
        self._pending = 0
        self._marked = False
        self._paused = False
        self._closing = False
        self._watch_call = None  # the next look at what a backed-up client took
        self._backed_up_at = 0.0  # when the transport paused us
        self._taken_at_backup = 0  # what the client had taken (acknowledged) then
        self._taken = 0  # ... and at the last look
        self._taken_when = 0.0  # when that last changed
        self._idle_ticks = 0  # looks in a row at which it had taken nothing more
        self._abort_call = None  # cuts a closing client off if it does not take its last bytes
        self._holding = None  # the publishers this connection holds back
        self._held_by = None  # the connections holding back this one's input
        self._pings_out = 0
        self._ping_call = None
        # Authentication (when the factory's security has a portal): the
        # avatar, the auth timeout, the login under way, the logout.
        self.session = None
        self._auth_call = None
        self._login = None  # the Deferred of a login under way
        self._logout = None
        self._tls_call = None  # closes a client that does not finish its TLS handshake

    # -- connection life cycle ------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))
        self.transport.registerProducer(self, True)
        if hasattr(self.transport, "setTcpNoDelay"):
            # Small frames go out at once: no Nagle delay on replies (nats-server does the same).
            self.transport.setTcpNoDelay(True)
        factory = self.factory
        within_limit = factory.register(self)
        self.greet()  # nats-server sends INFO before it refuses one connection too many
        if not within_limit:
            self.log.warn("[cid {cid}] {peer} refused: {max} connections already open",
                          cid=self.client_id, peer=self.peer, max=factory.max_connections)
            self.close_for(CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.log.debug("[cid {cid}] client connected from {peer}", cid=self.client_id, peer=self.peer)
        tls = factory.tls
        if tls is not None:
            self._tls_call = self.clock.callLater(tls.timeout, self._tls_timed_out)
            if not tls.handshake_first:
                # In-band upgrade: the greeting in clear text, then TLS on the same socket.
                self.flush_output()
                self.transport.startTLS(tls.options)
        security = factory.security
        if security.portal is not None:
            self._auth_call = self.clock.callLater(security.auth_timeout, self._auth_timed_out)
        if self.keepalive_frame():
            self._ping_call = self.clock.callLater(self._limits.ping_interval, self._keepalive)

    def connectionLost(self, reason):
        for call in (self._ping_call, self._auth_call, self._tls_call):
            if call is not None and call.active():
                call.cancel()
        if self._login is not None:
            self._login.cancel()  # a bcrypt check still waiting is dropped
        if self._logout is not None:
            self._logout()
        try:
            self._closing = True
            self._drop_output()
            self._stop_watching()
            if self._abort_call is not None and self._abort_call.active():
                self._abort_call.cancel()
            self._release_publishers()
            self._held_by = None
            self.stop_consuming()
        finally:
            self.factory.unregister(self)
        self.log.debug("[cid {cid}] {peer} closed", cid=self.client_id, peer=self.peer)

    # -- what subclasses provide ------------------------------------------------

    def greet(self) -> None:
        """Send the protocol's first frame, if it has one (NATS: INFO)."""

    @abstractmethod
    def stop_consuming(self) -> None:
        """Drop every subscription of this connection."""

    @abstractmethod
    def farewell(self, reason: str) -> bytes:
        """The protocol's last frame to a client closed for ``reason`` (a
        CLOSE_* constant; NATS: -ERR and its text), b"" for none."""

    def keepalive_frame(self) -> bytes:
        """What the server sends every ping_interval to see that the client
        lives (NATS: PING; its PONG calls ``keepalive_answered``); b"" for
        none: the server does not ping, the protocol watches its clients."""
        return b""

    def logged_in(self) -> None:
        """The login succeeded (``self.session`` is set, reading resumes)."""

    # -- login (twisted.cred), TLS and authentication timeouts --------------------

    def log_in(self, credentials, who: str) -> None:
        """Log in through the portal with ``credentials`` (None: nothing to
        check, the login fails); ``who`` names them in the log. Reading stops
        until the login is decided; then ``logged_in()`` runs, or the client
        is closed with CLOSE_LOGIN_REFUSED."""
        self.transport.pauseProducing()
        if credentials is None:
            self._login_failed(None, who)
            return
        presented_by(credentials, self.transport.getPeer())  # bcrypt checks queue per address
        self._login = self.factory.security.portal.login(credentials, self, IFlowMQSession)
        self._login.addCallbacks(self._logged_in, self._login_failed, errbackArgs=(who,))

    def certificate_credentials(self):
        """(credentials, who) of the client's verified TLS certificate when
        certificate logins are on, else None."""
        if self.factory.security.certificate_logins:
            identity = peer_identity(self.transport)
            if identity is not None:
                return CertificateCredentials(*identity), "certificate %s" % identity[1]
        return None

    def _logged_in(self, result):
        self._login = None
        if self._closing:
            return
        _, self.session, self._logout = result
        if self.session.permissions is not UNRESTRICTED:
            self.permissions = self.session.permissions
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self.log.debug("[cid {cid}] {peer} logged in as {user}", cid=self.client_id, peer=self.peer,
                       user=self.session.user)
        self.transport.resumeProducing()
        self.logged_in()

    def _login_failed(self, failure, who):
        self._login = None
        if failure is not None and failure.check(defer.CancelledError):
            return  # the client went away while its login waited
        # The user name, the peer and why (a refused or a crowded check), never the password.
        self.log.info("[cid {cid}] authentication failed for {who} from {peer}: {why}",
                      cid=self.client_id, who=who, peer=self.peer,
                      why="nothing to check" if failure is None else failure.getErrorMessage())
        self.close_for(CLOSE_LOGIN_REFUSED)

    def handshakeCompleted(self):
        """IHandshakeListener: the client finished its TLS handshake in time."""
        if self._tls_call is not None and self._tls_call.active():
            self._tls_call.cancel()
        self._tls_call = None

    def _tls_timed_out(self):
        self._tls_call = None
        self.log.info("[cid {cid}] {peer} did not complete the TLS handshake in time",
                      cid=self.client_id, peer=self.peer)
        self.transport.abortConnection()

    def _auth_timed_out(self):
        self._auth_call = None
        if self.session is None:
            self.log.info("[cid {cid}] {peer} did not authenticate in time", cid=self.client_id, peer=self.peer)
            self.close_for(CLOSE_AUTH_TIMEOUT)

    # -- keepalive ----------------------------------------------------------------

    def keepalive_answered(self) -> None:
        """The client answered the keepalive (NATS: PONG)."""
        self._pings_out = 0

    def _keepalive(self) -> None:
        if self._pings_out + 1 > self._limits.max_pings_out:
            self.log.info("[cid {cid}] stale connection {peer}: {n} PINGs unanswered",
                          cid=self.client_id, peer=self.peer, n=self._pings_out)
            self._ping_call = None
            self.close_for(CLOSE_STALE)
            return
        self._pings_out += 1
        frame = self.keepalive_frame()
        if frame:
            self.send(frame)
        self._ping_call = self.clock.callLater(self._limits.ping_interval, self._keepalive)

    # -- output -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the client; they are written when the batch ends."""
        if self._closing:
            return
        self._out.append(data)
        self._queued(len(data))

    def send_payload(self, head: bytes, payload: bytes, tail: bytes = b"") -> None:
        """Queue a frame around a payload of PAYLOAD_PIECE_AT bytes or
        more: ``head``, then ``payload`` itself (not copied), then ``tail``."""
        if self._closing:
            return
        self._out += (head, payload, tail) if tail else (head, payload)
        if len(payload) >= GATHER_WRITE_AT:
            self._gathered = True
        self._queued(len(head) + len(payload) + len(tail))

    def send_frames(self, pieces: list, size: int, gathered: bool) -> None:
        """Queue many frames at once, as ``send`` and ``send_payload`` queue
        them: ``pieces`` of ``size`` bytes in all; ``gathered`` when one of
        them is a payload of GATHER_WRITE_AT bytes or more."""
        if self._closing or not pieces:
            return
        self._out += pieces
        if gathered:
            self._gathered = True
        self._queued(size)

    def add_run_frames(self, line: bytes, run) -> bool:
        """Queue a frame per payload of ``run``, a flowmq.rawbytes.PayloadRun
        (``line``, the payload, CRLF), made in an OutputBuffer straight
        from the read buffer, and written from there when the batch ends.
        False, with nothing queued, where that does not apply: frames of
        other kinds wait already (they would be overtaken), the transport
        cannot send at once (TLS, output waiting in it or a paused
        connection: what a write does not send is copied, which would undo
        the saving, and a buffer would stay lent), or the frames do not
        fit."""
        if self._closing or self._out or self._paused:
            return False
        buffer = self._out_buffer
        borrowed = buffer is None
        if borrowed:
            # Looked up on the transport's class: a TLS layer (a Twisted
            # protocol wrapper) hands attribute lookups down to the TCP
            # transport below it, which would send the frames unencrypted.
            sends_now = getattr(type(self.transport), "sends_now", None)
            if sends_now is None or not sends_now(self.transport):
                return False
            buffer = rawbytes.borrow()
        before = buffer.filled
        if not buffer.add_run(line, run):
            if borrowed:
                buffer.release()
            return False
        self._out_buffer = buffer
        self._queued(buffer.filled - before)
        return True

    def _drop_output(self) -> None:
        """Forget the output that waits (the connection is cut off or gone)."""
        self._out = []
        self._pending = 0
        if self._out_buffer is not None:
            self._out_buffer.release()
            self._out_buffer = None

    def _queued(self, size: int) -> None:
        """``size`` more bytes wait: the slow-consumer limit, and a mark for the batch's flush."""
        self._pending += size
        if self._pending > self._max_pending:
            self._cut_off("more than %d bytes waiting%s" % (self._max_pending, self._taken_lately()))
        elif not self._marked:
            self._marked = True
            self._batcher.mark(self)

    @property
    def pending(self) -> int:
        """Bytes queued and not yet handed to the transport."""
        return self._pending

    # -- reading: the reads of one readable event as one batch (flowmq.transport) --

    def reads_begin(self) -> None:
        self._batcher.begin()

    def reads_end(self) -> None:
        self._batcher.end()

    def read_more(self) -> bool:
        """After a read that filled the buffer: read on in the same batch,
        while every connection with output waiting has less than
        READ_ON_BELOW of it (what a read causes is written at once when it
        is large)."""
        return not self._closing and self._batcher.all_below(READ_ON_BELOW)

    def flush_output(self) -> None:
        """Write what is queued (the WriteBatcher calls this when a batch ends)."""
        if self._paused or self._closing:
            return  # resumeProducing writes it; stays marked so it is not re-queued
        self._marked = False
        if self._out or self._out_buffer is not None:
            self._write_out()

    def _write_out(self) -> None:
        """Hand the queue to the transport: joined, or as a sequence when
        it holds a large payload; the frames of an OutputBuffer first."""
        buffer = self._out_buffer
        if buffer is not None:
            self._out_buffer = None
            self.transport.write_buffer(buffer.view())
            buffer.release()
        out = self._out
        self._out = []
        self._pending = 0
        if not out:
            return
        if self._gathered:
            self._gathered = False
            self.transport.writeSequence(out)
        else:
            self.transport.write(b"".join(out))

    def close_for(self, reason: str) -> None:
        """Send the protocol's farewell for ``reason`` after what is queued, then close."""
        frame = self.farewell(reason)
        if frame:
            self.send(frame)
        self.close_gracefully()

    def close_gracefully(self, half: bool = False) -> None:
        """Stop taking work, write what is queued, close; cut it off if the
        client does not take its bytes within the write deadline.

        ``half``: close our side only (TCP FIN; over TLS, which has no half
        close, the whole connection) and read and drop what the client
        still sends until it closes too or the write deadline passes: a
        client that is still writing when our last frame comes then reads
        that frame instead of failing on a reset."""
        if self._closing:
            return
        self._closing = True
        self._stop_watching()  # closing already: the abort below is the deadline now
        self.stop_consuming()
        self._release_publishers()
        if self._out or self._out_buffer is not None:
            self._write_out()
        # A registered producer holds the close back until it is resumed.
        self.transport.unregisterProducer()
        lose_write = getattr(self.transport, "loseWriteConnection", None) if half else None
        if lose_write is not None:
            lose_write()
        else:
            self.transport.loseConnection()
        self._abort_call = self.clock.callLater(self._write_deadline, self.transport.abortConnection)

    def _cut_off(self, why: str) -> None:
        self.log.warn("[cid {cid}] slow consumer {peer}: {why}; closing",
                      cid=self.client_id, peer=self.peer, why=why)
        self._drop_output()
        self.transport.write(self.farewell(CLOSE_SLOW_CONSUMER))
        self.close_gracefully()

    # -- IPushProducer: the transport says when it is full -------------------------

    def pauseProducing(self):
        self._paused = True
        if self._watch_call is None and not self._closing:
            # A new backed-up spell: the client counts as taking data until
            # a look shows otherwise.
            self._backed_up_at = self._taken_when = self.clock.seconds()
            self._taken = self._taken_at_backup = self.transport.peer_progress()[0]
            self._idle_ticks = 0
            self._watch_call = self.clock.callLater(TICK, self._watch)

    def resumeProducing(self):
        self._paused = False
        self._stop_watching()
        if self._marked:
            self.flush_output()
        self._release_publishers()

    def stopProducing(self):
        self._paused = True

    def _stop_watching(self) -> None:
        if self._watch_call is not None:
            if self._watch_call.active():
                self._watch_call.cancel()
            self._watch_call = None

    def _watch(self) -> None:
        """A look, every TICK while backed up, at what the client took: the
        stall and write-deadline rules, and the end of its holds when it
        stopped taking. (nats-server's rule is a write that stalls for its
        write_deadline; a push producer gets no stalled write, so FlowMQ
        watches what the socket's peer acknowledges instead.)"""
        self._watch_call = None
        taken, waiting = self.transport.peer_progress()
        now = self.clock.seconds()
        if taken != self._taken:
            self._taken, self._taken_when, self._idle_ticks = taken, now, 0
        else:
            self._idle_ticks += 1
        waiting += self._pending
        if self._idle_ticks >= self._stall_ticks:
            self._cut_off("took nothing for %.1f s while %d bytes waited for it" % (now - self._taken_when, waiting))
        elif now - self._backed_up_at >= self._write_deadline:
            self._cut_off("could not keep up: %d bytes still waiting after %.1f s backed up; "
                          "it took %d bytes in that time"
                          % (waiting, now - self._backed_up_at, taken - self._taken_at_backup))
        else:
            if self._idle_ticks >= HOLD_TICKS:
                self._release_publishers()
            self._watch_call = self.clock.callLater(TICK, self._watch)

    def _taken_lately(self) -> str:
        """For the log: what a backed-up client took since its output backed up."""
        if not self._paused:
            return ""
        return "; it took %d bytes in the %.1f s since its output backed up" % (
            self.transport.peer_progress()[0] - self._taken_at_backup, self.clock.seconds() - self._backed_up_at)

    # -- flow control -----------------------------------------------------------

    def hold_publisher(self, publisher) -> None:
        """After queueing a delivery: if our output is backed up while our
        client takes data, hold back the input of the connection that
        published it until we drain."""
        if not self._paused or self._pending <= self._hold_at or self._idle_ticks >= HOLD_TICKS:
            return
        self.hold(publisher)

    def hold(self, publisher) -> bool:
        """Hold back the input of ``publisher`` (a message's origin: its
        ``holdable()`` is the connection to hold) until this connection
        releases its publishers; False if there is none to hold, it is us,
        or we are closing (nobody would release it)."""
        connection = _connection_of(publisher)
        if connection is None or connection is self or self._closing:
            return False
        if self._holding is None:
            self._holding = set()
        elif connection in self._holding:
            return True
        self._holding.add(connection)
        connection.hold_input(self)
        return True

    def holds(self, publisher) -> bool:
        """Is this connection holding back ``publisher`` (a message's origin)?"""
        return self._holding is not None and _connection_of(publisher) in self._holding

    def holdable(self):
        """The connection to hold back for a message this one published: itself."""
        return self

    def _release_publishers(self) -> None:
        holding, self._holding = self._holding, None
        if holding:
            for publisher in holding:
                publisher.release_input(self)

    def hold_input(self, holder) -> None:
        """Stop reading from this client while ``holder`` is backed up."""
        if self._held_by is None:
            self._held_by = set()
        if not self._held_by and not self._closing:
            self.transport.pauseProducing()
        self._held_by.add(holder)

    def release_input(self, holder) -> None:
        held_by = self._held_by
        if held_by and holder in held_by:
            held_by.discard(holder)
            if not held_by and not self._closing:
                self.input_released()
                if not self._held_by and not self._closing:  # what waited may have got it held again
                    self.transport.resumeProducing()

    def input_released(self) -> None:
        """The last holder let go, before reading resumes: a protocol that
        stops handling mid-read while held goes on with what it kept."""


def _connection_of(publisher):
    """The connection to hold back for a message from ``publisher`` (its
    origin), None when there is none."""
    holdable = getattr(publisher, "holdable", None)
    return holdable() if holdable is not None else None
