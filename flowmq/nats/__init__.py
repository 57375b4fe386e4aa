"""The NATS client protocol (core NATS; JetStream builds on it)."""
