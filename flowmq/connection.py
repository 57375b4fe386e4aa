"""What every protocol's client connection shares, whatever it speaks.

``BrokerConnection`` is the base of each protocol's Protocol class. It owns:

- the output queue: frames are queued with ``send()`` and written in one
  ``transport.write`` per batch (the broker's WriteBatcher decides when);
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
  publishers after 0.5 s, and is cut off alone;
- the graceful close: flush what is queued, close, abort after the deadline.

A subclass implements ``stop_consuming()`` (drop its subscriptions) and
``farewell(reason)`` (the protocol's last frame to a client cut off as a
slow consumer), and calls ``hold_publisher(message.origin)`` after each
delivery it queues.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from flowmq.logs import logger

#: Output above which a backed-up connection starts holding its publishers.
HOLD_PUBLISHERS_AT = 1 << 20
#: Seconds between two looks at what a backed-up client took.
TICK = 0.1
#: A backed-up connection holds its publishers only while its client took
#: bytes within the last HOLD_TICKS ticks (0.5 s): long enough for a reader
#: that is descheduled for a moment, short enough that one that stopped
#: reading stalls the others for at most that long.
HOLD_TICKS = 5


@implementer(IPushProducer)
class BrokerConnection(Protocol, metaclass=ABCMeta):
    """A client connection of any protocol: output queue, slow consumers, flow control."""

    log = logger("flowmq.connection")

    def __init__(self, broker, clock, client_id: int, max_pending: int, write_deadline: float,
                 stall_deadline: float):
        self.broker = broker
        self.clock = clock
        self.client_id = client_id
        self.peer = "?"
        #: The logged-in user's Permissions, None when unrestricted; the
        #: broker checks publishes, subscriptions and deliveries against it.
        self.permissions = None
        self._batcher = broker.batcher
        self._max_pending = max_pending
        self._hold_at = min(max_pending // 4, HOLD_PUBLISHERS_AT)
        self._write_deadline = write_deadline
        # Counted in ticks, not read off the clock: a broker that did not run
        # for a while (a loaded machine) must not blame its clients for it.
        self._stall_ticks = max(1, round(stall_deadline / TICK))
        self._out: list = []
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

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))
        self.transport.registerProducer(self, True)
        if hasattr(self.transport, "setTcpNoDelay"):
            # Small frames go out at once: no Nagle delay on replies (nats-server does the same).
            self.transport.setTcpNoDelay(True)

    def connectionLost(self, reason):
        self._closing = True
        self._out = []
        self._pending = 0
        self._stop_watching()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._release_publishers()
        self._held_by = None
        self.stop_consuming()

    # -- what subclasses provide ------------------------------------------------

    @abstractmethod
    def stop_consuming(self) -> None:
        """Drop every subscription of this connection."""

    @abstractmethod
    def farewell(self, reason: str) -> bytes:
        """The protocol's last frame to a client that is cut off (a NATS -ERR ...)."""

    # -- output -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the client; they are written when the batch ends."""
        if self._closing:
            return
        self._out.append(data)
        self._pending += len(data)
        if self._pending > self._max_pending:
            self._cut_off("more than %d bytes waiting%s" % (self._max_pending, self._taken_lately()))
        elif not self._marked:
            self._marked = True
            self._batcher.mark(self)

    def flush_output(self) -> None:
        """Write what is queued (the WriteBatcher calls this when a batch ends)."""
        if self._paused or self._closing:
            return  # resumeProducing writes it; stays marked so it is not re-queued
        self._marked = False
        if self._out:
            data = b"".join(self._out)
            self._out = []
            self._pending = 0
            self.transport.write(data)

    def close_gracefully(self) -> None:
        """Stop taking work, write what is queued, close; cut it off if the
        client does not take its bytes within the write deadline."""
        if self._closing:
            return
        self._closing = True
        self._stop_watching()  # closing already: the abort below is the deadline now
        self.stop_consuming()
        self._release_publishers()
        if self._out:
            self.transport.write(b"".join(self._out))
            self._out = []
            self._pending = 0
        # A registered producer holds the close back until it is resumed.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._abort_call = self.clock.callLater(self._write_deadline, self.transport.abortConnection)

    def _cut_off(self, why: str) -> None:
        self.log.warn("[cid {cid}] slow consumer {peer}: {why}; closing",
                      cid=self.client_id, peer=self.peer, why=why)
        self._out = []
        self._pending = 0
        self.transport.write(self.farewell("Slow Consumer"))
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
        if publisher is None or publisher is self or not hasattr(publisher, "hold_input"):
            return
        if self._holding is None:
            self._holding = set()
        elif publisher in self._holding:
            return
        self._holding.add(publisher)
        publisher.hold_input(self)

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
                self.transport.resumeProducing()
