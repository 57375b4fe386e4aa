"""What every protocol's client connection shares, whatever it speaks.

``BrokerConnection`` is the base of each protocol's Protocol class. It owns:

- the output queue: frames are queued with ``send()`` and written in one
  ``transport.write`` per batch (the broker's WriteBatcher decides when);
- the slow-consumer rule: the connection is a streaming producer of its
  transport, so Twisted pauses it when the socket cannot take more; output
  then waits in the queue, and the client is cut off when more than
  ``max_pending`` bytes wait, or when it takes nothing for ``write_deadline``
  seconds while output waits;
- flow control: while its output is backed up, a connection holds back the
  reading of the connections that publish to it (``hold_input`` /
  ``release_input`` on the message's origin), so that fast publishers slow
  down to what a subscriber that is reading can take, instead of cutting it
  off; a subscriber that stops reading is cut off by the write deadline, and
  its holds end with it;
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


@implementer(IPushProducer)
class BrokerConnection(Protocol, metaclass=ABCMeta):
    """A client connection of any protocol: output queue, slow consumers, flow control."""

    log = logger("flowmq.connection")

    def __init__(self, broker, clock, client_id: int, max_pending: int, write_deadline: float):
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
        self._out: list = []
        self._pending = 0
        self._marked = False
        self._paused = False
        self._closing = False
        self._stall_call = None  # cuts the client off if it stays paused too long
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
        for call in (self._stall_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
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
            self._cut_off("more than %d bytes pending" % self._max_pending)
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
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()  # closing already: the abort below is the deadline now
        self._stall_call = None
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
        if self._stall_call is None and not self._closing:
            self._stall_call = self.clock.callLater(self._write_deadline, self._stalled)

    def resumeProducing(self):
        self._paused = False
        if self._stall_call is not None:
            if self._stall_call.active():
                self._stall_call.cancel()
            self._stall_call = None
        if self._marked:
            self.flush_output()
        self._release_publishers()

    def stopProducing(self):
        self._paused = True

    def _stalled(self):
        self._stall_call = None
        if not self._closing:
            self._cut_off("took nothing for %g s" % self._write_deadline)

    # -- flow control -----------------------------------------------------------

    def hold_publisher(self, publisher) -> None:
        """After queueing a delivery: if our output is backed up, hold back the
        input of the connection that published it until we drain."""
        if not self._paused or self._pending <= self._hold_at:
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
