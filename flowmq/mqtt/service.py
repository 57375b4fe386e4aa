"""What every MQTT listener of a broker shares: the sessions by client id,
the retained messages, and the Will messages waiting for their delay.

One ``MqttService`` per broker, a child of the broker service (started
before the listeners, stopped after them). It decides what a CONNECT does
to the session of its client id (new, resumed, taken over: 5.0 §3.1.4),
ends sessions (at disconnection, or after their Session Expiry Interval),
and publishes Wills (5.0 §3.1.2.5: after the Will Delay Interval, unless
the client came back first).
"""

from __future__ import annotations

from twisted.application import service

from flowmq.core.errors import PermissionDenied
from flowmq.logs import logger
from flowmq.mqtt.persistence import SESSIONS, SessionStore
from flowmq.mqtt.retained import KIND, RetainedMessages
from flowmq.mqtt.session import Session

log = logger("flowmq.mqtt")

#: A Session Expiry Interval of this many seconds never ends (5.0 §3.1.2.11.2).
NEVER = 0xFFFFFFFF


class MqttService(service.Service):
    """Sessions, retained messages and Wills of one broker; see the module docstring."""

    name = "mqtt"

    def __init__(self, broker, settings):
        self.broker = broker
        self.settings = settings.mqtt
        self.clock = broker.clock
        self.sessions: dict = {}  # client id -> Session
        self.retained = RetainedMessages(broker)
        #: The persistent sessions' store (persistence.py); None if it could not be opened.
        self.store = None
        self._expiries: dict = {}  # Session -> DelayedCall that ends it
        self._wills: dict = {}  # client id -> DelayedCall that publishes its Will

    def startService(self):
        service.Service.startService(self)
        self.retained.open()
        store = SessionStore(self.broker)
        try:
            restored = store.open()
        except Exception:
            log.failure("MQTT persistent sessions cannot be stored ({kind}/{name}): they are kept in memory "
                        "only until this is fixed and the broker restarted", kind=KIND, name=SESSIONS)
            restored = {}
        else:
            self.store = store
        for restored_session in restored.values():
            self._restore(restored_session)
        log.info("MQTT ready: {n} retained messages, {sessions} persistent sessions ({queued} messages queued)",
                 n=len(self.retained), sessions=len(self.sessions),
                 queued=sum(len(session.queue) for session in self.sessions.values()))

    def _restore(self, restored) -> None:
        """A persistent session read back at start-up: its subscriptions
        (as they were allowed when made) and queue; its expiry starts now."""
        session = Session(restored.client_id, self.settings.max_inflight, self.settings.max_queued)
        session.persistent = True
        session.expiry = restored.expiry
        session.store = self.store
        for topic_filter, options, identifier in restored.subscriptions:
            try:
                session.subscribe(self.broker, topic_filter, options, identifier)
            except Exception as error:
                log.error("MQTT session {client}: subscription {filter} not restored: {error}",
                          client=session.client_id, filter=topic_filter, error=error)
        session.restore(restored.queued, restored.delivery)
        if restored.delivery is not None:
            self.store.save(session)  # the ids are in memory now; a crash must not find them stale
        self.sessions[session.client_id] = session
        if session.expiry is not None:
            self._expiries[session] = self.clock.callLater(session.expiry, self._expired, session)

    def stopService(self):
        """After the listeners: the Wills still waiting for their delay go
        now (as mosquitto sends them at shutdown: the clients are gone, and
        a restart would forget them), then each persistent session's packet
        ids are written beside it."""
        service.Service.stopService(self)
        for call in self._expiries.values():
            if call.active():
                call.cancel()
        self._expiries.clear()
        for call in list(self._wills.values()):
            if call.active():
                client_id, message = call.args
                call.cancel()
                self._delayed_will(client_id, message)
        self._wills.clear()
        if self.store is not None:
            for session in self.sessions.values():
                if session.store is not None:
                    session.store.save(session, delivery=True)
        self.retained.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- sessions ------------------------------------------------------------------

    def open_session(self, connection, client_id: str, clean_start: bool, persistent: bool, expiry):
        """The session of a client that connected: ``(session, present)``.

        The client id's connection, if one is open, is taken over (closed
        with reason 0x8E, 5.0 §3.1.4-3). With Clean Start its session
        ends and a new one begins; else the kept one (if any) resumes.
        ``persistent``/``expiry``: the new terms of the session (kept after
        the connection for ``expiry`` seconds, None for ever)."""
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            session.detach()
            old.taken_over(resumed=not clean_start)
        self._cancel_will(client_id)
        present = session is not None and not clean_start
        if session is not None and clean_start:
            self.end_session(session)
            session = None
        if session is None:
            session = self.sessions[client_id] = Session(client_id, self.settings.max_inflight,
                                                         self.settings.max_queued)
        self._cancel_expiry(session)
        self.set_terms(session, persistent, expiry)
        return session, present

    def set_terms(self, session, persistent: bool, expiry) -> None:
        """How long the session outlives its connection (persistent: for
        ``expiry`` seconds, None for ever); a persistent one is on disk."""
        session.persistent = persistent
        session.expiry = expiry
        if persistent and self.store is not None:
            session.store = self.store
            self.store.save(session)
        elif session.store is not None:
            session.store.forget(session)
            session.store = None

    def subscriptions_changed(self, session) -> None:
        if session.store is not None:
            session.store.save(session)

    def connection_ended(self, session) -> None:
        """The session's client went: the session ends, or stays for its expiry."""
        session.detach()
        if not session.persistent:
            self.end_session(session)
        elif session.expiry is not None:
            self._expiries[session] = self.clock.callLater(session.expiry, self._expired, session)

    def _expired(self, session) -> None:
        self._expiries.pop(session, None)
        if session.connection is None:
            log.info("MQTT session {client} expired", client=session.client_id)
            self.end_session(session)

    def _cancel_expiry(self, session) -> None:
        call = self._expiries.pop(session, None)
        if call is not None and call.active():
            call.cancel()

    def end_session(self, session) -> None:
        """Drop a session: its subscriptions leave the router, what it kept goes."""
        self._cancel_expiry(session)
        for subscription in session.subscriptions.values():
            self.broker.unsubscribe(subscription)
        session.subscriptions.clear()
        session.clear_delivery_state()
        if session.store is not None:
            session.store.forget(session)
            session.store = None
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    # -- Wills ---------------------------------------------------------------------------

    def will(self, client_id: str, message, delay: int, persistent: bool, expiry) -> None:
        """Publish ``message``, the Will of a connection that ended without
        a normal DISCONNECT, now or after ``delay`` seconds, or when its
        session ends if that comes first (5.0 §3.1.3.2.2); not at all if the
        client id connects again before."""
        if not persistent:
            delay = 0  # the session ended with the connection, and the Will goes with it
        elif expiry is not None:
            delay = min(delay, expiry)
        if delay <= 0:
            self._publish_will(message)
            return
        self._wills[client_id] = self.clock.callLater(delay, self._delayed_will, client_id, message)

    def _delayed_will(self, client_id: str, message) -> None:
        self._wills.pop(client_id, None)
        self._publish_will(message)

    def _cancel_will(self, client_id: str) -> None:
        call = self._wills.pop(client_id, None)
        if call is not None and call.active():
            call.cancel()

    def _publish_will(self, message) -> None:
        try:
            self.publish(message)
        except PermissionDenied:
            log.info("MQTT Will on {topic} not sent: its client may not publish there", topic=message.topic)
        except Exception:
            log.failure("publishing an MQTT Will on {topic} failed", topic=message.topic)

    # -- publishing ---------------------------------------------------------------------

    def publish(self, message) -> int:
        """Publish an MQTT message and keep (or clear) it when it is retained;
        PermissionDenied (nothing published, nothing kept) if its publisher
        may not publish there."""
        delivered = self.broker.publish(message)
        if getattr(message, "retain", False):
            self.retained.retain(message)
        return delivered
