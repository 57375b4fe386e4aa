"""FlowMQ's loggers: twisted.logger, filtered by the configured level.

Every module gets its Logger from ``logger()``; they all publish through one
level filter in front of Twisted's global log publisher, so ``broker.log_level``
(debug, info, warn, error) decides what reaches twistd's log file.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)

LEVELS = ("debug", "info", "warn", "error")

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def logger(namespace: str) -> Logger:
    return Logger(namespace=namespace, observer=_observer)


def set_level(name: str) -> None:
    """Let events of level ``name`` and above through (one of LEVELS)."""
    _predicate.setLogLevelForNamespace("", LogLevel.levelWithName(name))
