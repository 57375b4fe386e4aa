"""Stream and consumer configurations: checked, and filled in as nats-server does.

A configuration arrives as the JSON object of a CREATE/UPDATE request and is
kept as a plain dict in nats-server's shape, with every default written out,
so that INFO returns what nats-server would and "create again with the same
configuration" can compare two dicts. Subjects stay NATS subjects here;
``topic_filters`` turns them into the core's unified topic filters.

Numbers: nats-server decodes each JSON number into a Go integer type
(int32, int64, uint64) and answers "invalid JSON" (400, 10025) for one that
does not fit, so ``check_range`` does the same; a sequence that fits uint64
but is beyond the last a FlowMQ stream can have (the store's ``MAX_SEQ``)
is refused too. Nothing that the store or a restart could not take is ever
accepted.
"""

from __future__ import annotations

import functools

from flowmq.core.covers import filter_covers
from flowmq.core.filtertrie import FilterTrie, OverlapTooComplex, distinct_owners, overlapping
from flowmq.core.store import MAX_SEQ
from flowmq.core.topics import SEPARATOR, InvalidTopic
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.wire import go_duration, parse_rfc3339
from flowmq.nats.subjects import filter_to_topic_filter, subject_to_topic

SECOND = 1_000_000_000
DEFAULT_DUPLICATE_WINDOW = 120 * SECOND
DEFAULT_ACK_WAIT = 30 * SECOND
DEFAULT_INACTIVE_THRESHOLD = 5 * SECOND
MIN_HEARTBEAT = SECOND // 10
MAX_NAME_LENGTH = 255
#: Most subjects of one stream, and filter subjects of one consumer.
MAX_SUBJECTS = 1000
#: The error text of an overlap check cut at its budget (see flowmq.core.filtertrie).
TOO_COMPLEX = "subjects too complex to check for overlaps"
#: The JetStream API's subjects, which only a stream with no_ack may take in.
_API = FilterTrie((("$JS/API/#", "$JS.API.>"),))
_NAME_FORBIDDEN = frozenset(" \t\r\n\x0b\x0c.*>")

STREAM_DEFAULTS = {
    "retention": "limits", "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": 0,
    "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old", "storage": "file",
    "num_replicas": 1, "duplicate_window": 0, "sealed": False, "deny_delete": False,
    "deny_purge": False, "allow_rollup_hdrs": False, "allow_direct": False, "mirror_direct": False,
    "discard_new_per_subject": False, "no_ack": False, "compression": "none", "consumer_limits": {},
}
_STREAM_OPTIONAL = ("description", "metadata")
_STREAM_UNSUPPORTED = ("mirror", "sources", "republish", "subject_transform", "first_seq")
_STREAM_CHOICES = {"retention": ("limits", "interest", "workqueue"), "discard": ("old", "new"),
                   "storage": ("file", "memory"), "compression": ("none", "s2")}

CONSUMER_DEFAULTS = {
    "deliver_policy": "all", "ack_policy": "none", "max_deliver": -1, "replay_policy": "instant",
    "num_replicas": 0,
}
_CONSUMER_OPTIONAL = (
    "name", "durable_name", "description", "opt_start_seq", "opt_start_time", "ack_wait", "backoff",
    "filter_subject", "filter_subjects", "max_waiting", "max_ack_pending", "flow_control",
    "idle_heartbeat", "headers_only", "deliver_subject", "deliver_group", "inactive_threshold",
    "mem_storage", "metadata", "max_batch", "max_expires", "max_bytes", "rate_limit_bps", "sample_freq",
)
_CONSUMER_CHOICES = {
    "deliver_policy": ("all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"),
    "ack_policy": ("none", "all", "explicit"), "replay_policy": ("instant", "original"),
}
# What an update may change; everything else must stay as it was.
_CONSUMER_UPDATABLE = frozenset((
    "description", "ack_wait", "max_deliver", "backoff", "max_waiting", "max_ack_pending", "headers_only",
    "inactive_threshold", "metadata", "max_batch", "max_expires", "max_bytes", "rate_limit_bps",
    "sample_freq", "filter_subject", "filter_subjects", "idle_heartbeat", "num_replicas",
))


def check_name(name, path_error, what: str) -> str:
    """A stream or consumer name: a non-empty string without white space, '.', '*', '>' or path separators."""
    if not isinstance(name, str) or not name:
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="%s name is required" % what)
    if "/" in name or "\\" in name:
        raise ApiError(path_error)
    if len(name) > MAX_NAME_LENGTH or not _NAME_FORBIDDEN.isdisjoint(name) or not name.isprintable():
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="invalid %s name %r" % (what, name))
    return name


def _integer(config, key, minimum=-1):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="%s must be an integer >= %d" % (key, minimum))
    return value


_STRING_FIELDS = frozenset((
    "name", "durable_name", "description", "deliver_subject", "deliver_group", "filter_subject",
    "opt_start_time", "sample_freq", "retention", "discard", "storage", "compression",
    "deliver_policy", "ack_policy", "replay_policy",
))
_BOOLEAN_FIELDS = frozenset((
    "flow_control", "headers_only", "mem_storage", "sealed", "deny_delete", "deny_purge",
    "allow_rollup_hdrs", "allow_direct", "mirror_direct", "discard_new_per_subject", "no_ack",
))
#: Go integer types: (name, least, greatest).
INT32 = ("int32", -(1 << 31), (1 << 31) - 1)
INT64_MAX = (1 << 63) - 1
INT64 = ("int64", -INT64_MAX - 1, INT64_MAX)
UINT64 = ("uint64", 0, (1 << 64) - 1)
#: The integer fields of the configurations and their type in nats-server
#: (Go's int and time.Duration are int64).
_INTEGER_FIELDS = dict.fromkeys((
    "ack_wait", "max_deliver", "max_waiting", "max_ack_pending", "idle_heartbeat", "inactive_threshold",
    "max_batch", "max_expires", "max_bytes", "num_replicas", "max_consumers", "max_msgs", "max_age",
    "max_msgs_per_subject", "duplicate_window",
), INT64)
_INTEGER_FIELDS.update(max_msg_size=INT32, opt_start_seq=UINT64, rate_limit_bps=UINT64, first_seq=UINT64)


def check_range(value: int, field: str, kind=INT64) -> int:
    """``value`` if it fits the Go integer type ``kind``; else the invalid-JSON
    error that nats-server answers for a number that does not fit its field."""
    name, least, greatest = kind
    if not least <= value <= greatest:
        raise ApiError(errors.INVALID_JSON, err="number %d of %s does not fit %s" % (value, field, name))
    return value


def check_seq(seq: int) -> int:
    """A stream sequence a request names as a position to move to: at most
    the last a stream can have."""
    if seq > MAX_SEQ:
        raise ApiError(errors.SEQUENCE_BEYOND_LAST, seq=seq, last=MAX_SEQ)
    return seq


def _check_types(config: dict, error) -> None:
    """Every known field has its JSON type (nats-server rejects the request otherwise)."""
    for key, value in config.items():
        if key in _STRING_FIELDS:
            ok = isinstance(value, str)
        elif key in _BOOLEAN_FIELDS:
            ok = isinstance(value, bool)
        elif key in _INTEGER_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok and check_range(value, key, _INTEGER_FIELDS[key]) >= -1
        elif key == "metadata":
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        else:
            continue
        if not ok:
            raise ApiError(error, err="invalid value for %s: %r" % (key, value))


def _choices(config, choices):
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise ApiError(errors.STREAM_INVALID_CONFIG, err="%s must be one of %s" % (key, ", ".join(allowed)))


def topic_filters(subjects) -> list:
    """The unified topic filters of NATS subjects (which may have wildcards)."""
    return list(_topic_filters(tuple(subjects)))


@functools.lru_cache(maxsize=4)
def _topic_filters(subjects: tuple) -> tuple:
    # Kept for the few subject lists in use at once: one request converts its
    # subjects for the checks, the overlap trie and the stream, and a
    # 1,000-subject list of 128 tokens costs a good part of a second a time.
    try:
        return tuple(filter_to_topic_filter(subject) for subject in subjects)
    except InvalidTopic as e:
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="invalid subject: %s" % e) from None


def stream_config(request: dict, max_levels: int) -> dict:
    """The full configuration of a stream from a CREATE/UPDATE request body
    (or a stored configuration, checked again at start-up). ``max_levels``:
    the router's limit on a subscription's levels (broker.max_topic_levels),
    which the stream's subjects must keep to, since it subscribes to them."""
    if not isinstance(request, dict):
        raise ApiError(errors.BAD_REQUEST)
    for key in _STREAM_UNSUPPORTED:
        if request.get(key):
            raise ApiError(errors.STREAM_INVALID_CONFIG, err="%s is not supported by FlowMQ" % key)
    if request.get("mirror_direct"):  # there is no mirror (nats-server: only a mirror may have it)
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="stream has no mirror but does have mirror direct")
    config = {"name": check_name(request.get("name"), errors.STREAM_NAME_PATH, "stream")}
    for key in _STREAM_OPTIONAL:
        if request.get(key) is not None:
            config[key] = request[key]
    subjects = request.get("subjects") or [config["name"]]
    if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="subjects must be a list of subjects")
    if len(subjects) > MAX_SUBJECTS:
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="more than %d subjects" % MAX_SUBJECTS)
    config["subjects"] = subjects
    for key, default in STREAM_DEFAULTS.items():
        value = request.get(key)
        config[key] = default if value is None else value
    _check_types(config, errors.STREAM_INVALID_CONFIG)
    _choices(config, _STREAM_CHOICES)
    for key in ("max_consumers", "max_msgs", "max_bytes", "max_msgs_per_subject", "max_msg_size"):
        if _integer(config, key) == 0:
            config[key] = -1  # nats-server: 0 means unlimited
    for key in ("max_age", "duplicate_window"):
        _integer(config, key, 0)
    if config["num_replicas"] not in (0, 1):
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="replicas > 1 not supported in non-clustered mode")
    config["num_replicas"] = 1
    if config["max_age"] and config["duplicate_window"] > config["max_age"]:
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="duplicates window can not be larger then max age")
    if not config["duplicate_window"]:
        config["duplicate_window"] = min(DEFAULT_DUPLICATE_WINDOW, config["max_age"] or DEFAULT_DUPLICATE_WINDOW)
    if config["discard_new_per_subject"] and (config["discard"] != "new" or config["max_msgs_per_subject"] <= 0):
        raise ApiError(errors.STREAM_INVALID_CONFIG,
                       err="discard new per subject requires discard new policy and max msgs per subject to be set")
    filters = topic_filters(subjects)
    deepest = max(topic_filter.count(SEPARATOR) + 1 for topic_filter in filters)
    if deepest > max_levels:  # nats-server has no such limit; its error for a subject it refuses
        raise ApiError(errors.STREAM_INVALID_CONFIG, err="invalid subject: %d levels, more than the %d "
                       "of broker.max_topic_levels (a trailing '>' counts as two)" % (deepest, max_levels))
    trie = subject_trie(subjects)
    invalid = errors.STREAM_INVALID_CONFIG
    if not config["no_ack"] and any(overlaps(trie, _API, invalid)):
        # PubAcks to API requests would be answers to the requests themselves.
        raise ApiError(invalid, err="subjects that overlap with jetstream api require no-ack to be true")
    found = first_overlap(trie, subjects, invalid)
    if found:
        # nats-server's words (a subject given twice overlaps with itself).
        raise ApiError(invalid, err='subject "%s" overlaps with "%s"' % found)
    return config


def subject_trie(subjects) -> FilterTrie:
    """The trie of NATS subjects' unified topic filters, each owned by its subject."""
    trie = FilterTrie()
    for subject, topic_filter in zip(subjects, topic_filters(subjects)):
        trie.add(topic_filter, subject)
    return trie


def overlaps(mine: FilterTrie, theirs: FilterTrie, too_complex):
    """``flowmq.core.filtertrie.overlapping``, or ApiError ``too_complex``
    (with TOO_COMPLEX) when the walk passes its budget of steps."""
    try:
        yield from overlapping(mine, theirs)
    except OverlapTooComplex:
        raise ApiError(too_complex, err=TOO_COMPLEX) from None


def first_overlap(trie: FilterTrie, subjects: list, too_complex):
    """Two of ``subjects`` (whose trie is ``trie``) that overlap, in their
    order, or None. A subject given twice overlaps with itself."""
    seen = set()
    for subject in subjects:
        if subject in seen:
            return subject, subject
        seen.add(subject)
    for mine, theirs in overlaps(trie, trie, too_complex):
        found = distinct_owners(mine, theirs)
        if found:
            return tuple(sorted(found, key=subjects.index))
    return None


def consumer_config(request, stream_config_: dict, pull_defaults: dict) -> dict:
    """The full configuration of a consumer from the "config" of a CREATE request.

    ``pull_defaults`` has the broker's max_ack_pending and max_waiting.
    """
    if not isinstance(request, dict):
        raise ApiError(errors.CONSUMER_CONFIG_REQUIRED)
    config = {}
    for key in _CONSUMER_OPTIONAL:
        value = request.get(key)
        # Unset, empty and (for numbers) 0 all mean "the default", as in nats-server.
        if value is not None and value != "" and value != [] and (value != 0 or isinstance(value, bool)):
            config[key] = value
    for key, default in CONSUMER_DEFAULTS.items():
        value = request.get(key)
        config[key] = default if value is None else value
    _check_types(config, errors.CONSUMER_CREATE)
    _choices(config, _CONSUMER_CHOICES)
    for key in ("name", "durable_name"):
        if key in config:
            check_name(config[key], errors.CONSUMER_NAME_PATH, "consumer")
    if "name" in config and "durable_name" in config and config["name"] != config["durable_name"]:
        raise ApiError(errors.CONSUMER_CREATE, err="consumer name in request does not match durable name")
    for key in ("max_deliver",):
        _integer(config, key)
        if config[key] == 0:
            config[key] = -1
    for key in ("ack_wait", "idle_heartbeat", "inactive_threshold", "max_expires"):
        if key in config:
            _integer(config, key, 0)
    push = "deliver_subject" in config
    if push:
        try:
            subject_to_topic(config["deliver_subject"])
        except InvalidTopic:
            raise ApiError(errors.CONSUMER_INVALID_DELIVER_SUBJECT) from None
    elif config.get("idle_heartbeat"):
        raise ApiError(errors.CONSUMER_HEARTBEAT_NEEDS_PUSH)
    elif config.get("flow_control"):
        raise ApiError(errors.CONSUMER_FLOW_CONTROL_NEEDS_PUSH)
    if 0 < config.get("idle_heartbeat", 0) < MIN_HEARTBEAT:
        raise ApiError(errors.CONSUMER_SMALL_HEARTBEAT)
    limits = _consumer_limits(stream_config_)
    for key, value in limits.items():  # nats-server: the stream's consumer_limits are the defaults
        config.setdefault(key, value)
    if config["ack_policy"] != "none":
        config.setdefault("ack_wait", DEFAULT_ACK_WAIT)
        config.setdefault("max_ack_pending", pull_defaults["max_ack_pending"])
    if not push:
        config.setdefault("max_waiting", pull_defaults["max_waiting"])
    backoff = config.get("backoff")
    if backoff is not None:
        if not isinstance(backoff, list) or not all(
                isinstance(b, int) and not isinstance(b, bool) and check_range(b, "backoff", INT64) > 0
                for b in backoff):
            raise ApiError(errors.CONSUMER_CREATE, err="backoff must be a list of durations")
        if config["max_deliver"] != -1 and config["max_deliver"] <= len(backoff):
            raise ApiError(errors.CONSUMER_MAX_DELIVER_BACKOFF)
        config["ack_wait"] = backoff[0]  # nats-server: the first backoff is the ack wait
    if config.get("max_ack_pending", 0) > limits.get("max_ack_pending", INT64_MAX):
        raise ApiError(errors.CONSUMER_MAX_ACK_PENDING_EXCESS, limit=limits["max_ack_pending"])
    if config.get("inactive_threshold", 0) > limits.get("inactive_threshold", INT64_MAX):
        raise ApiError(errors.CONSUMER_INACTIVE_THRESHOLD_EXCESS, limit=go_duration(limits["inactive_threshold"]))
    _check_start(config)
    if config.get("flow_control") and not config.get("idle_heartbeat"):
        raise ApiError(errors.CONSUMER_FLOW_CONTROL_NEEDS_HEARTBEATS)  # nats-server: a stall must show
    _check_filters(config, stream_config_)
    if stream_config_["retention"] == "workqueue" and config["ack_policy"] != "explicit":
        raise ApiError(errors.CONSUMER_WQ_EXPLICIT_ACK)
    return config


def _consumer_limits(stream_config_: dict) -> dict:
    """The stream's consumer_limits that are set (positive integers)."""
    limits = stream_config_.get("consumer_limits")
    if not isinstance(limits, dict):
        return {}
    return {key: limits[key] for key in ("max_ack_pending", "inactive_threshold")
            if isinstance(limits.get(key), int) and not isinstance(limits[key], bool) and limits[key] > 0}


def _check_start(config: dict) -> None:
    policy = config["deliver_policy"]
    if policy == "by_start_sequence":
        if not isinstance(config.get("opt_start_seq"), int) or config["opt_start_seq"] <= 0:
            raise ApiError(errors.CONSUMER_CREATE, err="consumer delivery policy is deliver by start sequence, but optional start sequence is not set")
        check_seq(config["opt_start_seq"])
    elif "opt_start_seq" in config:
        raise ApiError(errors.CONSUMER_CREATE, err="consumer delivery policy is not deliver by start sequence, but optional start sequence is set")
    if policy == "by_start_time":
        try:
            parse_rfc3339(config["opt_start_time"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(errors.CONSUMER_CREATE, err="consumer delivery policy is deliver by start time, but optional start time is not set") from None
    elif "opt_start_time" in config:
        raise ApiError(errors.CONSUMER_CREATE, err="consumer delivery policy is not deliver by start time, but optional start time is set")


def _check_filters(config: dict, stream_config_: dict) -> None:
    if "filter_subject" in config and "filter_subjects" in config:
        raise ApiError(errors.CONSUMER_DUPLICATE_FILTERS)
    if not isinstance(config.get("filter_subjects", []), list) or not isinstance(config.get("filter_subject", ""), str):
        raise ApiError(errors.CONSUMER_CREATE, err="filter subjects must be subjects")
    subjects = consumer_filter_subjects(config)
    if len(subjects) > MAX_SUBJECTS:
        raise ApiError(errors.CONSUMER_CREATE, err="at most %d filter subjects" % MAX_SUBJECTS)
    if not all(isinstance(s, str) and s for s in subjects):
        raise ApiError(errors.CONSUMER_CREATE, err="consumer filter in FilterSubjects cannot be empty")
    if not subjects:
        return
    trie = subject_trie(subjects)
    if _one_takes_in_another(trie, subjects):
        raise ApiError(errors.CONSUMER_OVERLAPPING_FILTERS)
    # Each filter must take in some of the stream's subjects.
    unmatched = set(subjects)
    for owners, _theirs in overlaps(trie, subject_trie(stream_config_["subjects"]), errors.CONSUMER_CREATE):
        unmatched.difference_update(owners)
        if not unmatched:
            break
    if unmatched:
        raise ApiError(errors.CONSUMER_FILTER_NOT_SUBSET)


def _one_takes_in_another(trie: FilterTrie, subjects: list) -> bool:
    """Does one of a consumer's filter subjects (whose trie is ``trie``) take
    in every subject of another? nats-server (since PR 7810) refuses only
    that, not filters that merely overlap (`a.*.c` and `a.b.>`); a subject
    given twice takes in itself. Only the pairs the trie walk finds
    overlapping are compared."""
    if len(set(subjects)) != len(subjects):
        return True
    filters = dict(zip(subjects, topic_filters(subjects)))
    for mine, theirs in overlaps(trie, trie, errors.CONSUMER_CREATE):
        for one in mine:
            for other in theirs:
                if one != other and filter_covers(filters[one], filters[other]):
                    return True
    return False


def consumer_filter_subjects(config: dict) -> list:
    """The consumer's filter subjects (none: the whole stream)."""
    if "filter_subjects" in config:
        return list(config["filter_subjects"])
    subject = config.get("filter_subject")
    return [subject] if subject and subject != ">" else []


def check_consumer_update(old: dict, new: dict) -> None:
    """An update may change only some fields (nats-server's rules, simplified)."""
    for key in set(old) | set(new):
        if key not in _CONSUMER_UPDATABLE and old.get(key) != new.get(key):
            raise ApiError(errors.CONSUMER_CREATE, err="consumer configuration update can not change %s" % key)
