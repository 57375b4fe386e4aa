"""The protocol-independent core: topics, router, messages and the broker service."""
