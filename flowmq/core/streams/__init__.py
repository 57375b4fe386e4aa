"""Streams in the core: logs (log.py), their ingest rules (rules.py) and the
broker's registry of them by kind and name (registry.py). Consumers of a log
(cursor, acknowledgements, credit) join them here; see docs/ARCHITECTURE.md."""
