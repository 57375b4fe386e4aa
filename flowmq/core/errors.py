"""Errors the core raises to the protocols, which turn them into their own
protocol errors (a NATS -ERR, an MQTT reason code, an AMQP channel close)."""


class PermissionDenied(Exception):
    """The user's permissions do not allow this publish or subscription."""
