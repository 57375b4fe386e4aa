"""The JetStream API's errors: JSON objects with nats-server's codes.

nats-py picks the exception it raises from ``code`` (404 -> NotFoundError,
400 -> BadRequestError, 503 -> ServiceUnavailableError ...) and, for some
operations, from ``err_code`` (10071 -> KeyWrongLastSequenceError), so these
are nats-server's own numbers (server/errors.json).
"""

from __future__ import annotations

from flowmq.core.streams.rules import Refused


class ApiError(Refused):
    """An API request that fails; ``as_json()`` is the response's "error" object.
    (A Refused: a stream's publish rule that says no is no fault of the broker.)"""

    def __init__(self, kind, **values):
        code, err_code, description = kind
        self.code = code
        self.err_code = err_code
        self.description = description.format(**values) if values else description
        Exception.__init__(self, self.description)

    def as_json(self) -> dict:
        return {"code": self.code, "err_code": self.err_code, "description": self.description}


# (code, err_code, description) as nats-server has them.
BAD_REQUEST = (400, 10003, "bad request")
INVALID_JSON = (400, 10025, "invalid JSON: {err}")
STREAM_NOT_FOUND = (404, 10059, "stream not found")
STREAM_NAME_EXISTS = (400, 10058, "stream name already in use with a different configuration")
# FlowMQ's own: the stream is on disk but was not restored at start-up (see the log).
STREAM_NOT_RESTORED = (400, 10058, "stream name already in use by a stream that was not restored: {reason}")
STREAM_CREATE = (500, 10049, "{err}")
STREAM_NAME_MISMATCH = (400, 10056, "stream name in subject does not match request")
STREAM_NAME_PATH = (400, 10128, "Stream name can not contain path separators")
STREAM_SUBJECT_OVERLAP = (400, 10065, "subjects overlap with an existing stream")
STREAM_INVALID_CONFIG = (500, 10052, "{err}")
STREAM_UPDATE = (500, 10069, "{err}")
STREAM_NOT_MATCH = (400, 10060, "expected stream does not match")
WRONG_LAST_SEQUENCE = (400, 10071, "wrong last sequence: {seq}")
WRONG_LAST_MSG_ID = (400, 10070, "wrong last msg ID: {id}")
STORE_FAILED = (503, 10077, "{err}")
MESSAGE_TOO_BIG = (400, 10054, "message size exceeds maximum allowed")
NO_MESSAGE_FOUND = (404, 10037, "no message found")
SEQUENCE_NOT_FOUND = (400, 10043, "sequence {seq} not found")
# FlowMQ's own: a uint64 sequence beyond the store's i64 (nats-server takes it).
SEQUENCE_BEYOND_LAST = (400, 10003, "sequence {seq} is beyond the last a stream can have ({last})")
MSG_DELETE_FAILED = (500, 10057, "{err}")
PURGE_FAILED = (500, 10110, "{err}")
ROLLUP_FAILED = (500, 10111, "{err}")
MAX_STREAMS = (400, 10027, "maximum number of streams reached")
FILE_STREAMS_LIMIT = (400, 10027, "maximum number of streams reached: {err}")
INSUFFICIENT_MEMORY = (500, 10028, "insufficient memory resources available")
INSUFFICIENT_STORAGE = (500, 10047, "insufficient storage resources available")
ACCOUNT_RESOURCES_EXCEEDED = (400, 10002, "resource limits exceeded for account")
MAX_CONSUMERS = (400, 10026, "maximum consumers limit reached")
CONSUMER_NOT_FOUND = (404, 10014, "consumer not found")
CONSUMER_EXISTS = (400, 10148, "consumer already exists")
CONSUMER_CREATE = (500, 10012, "{err}")
CONSUMER_CONFIG_REQUIRED = (400, 10078, "consumer config required")
CONSUMER_NAME_PATH = (400, 10127, "Consumer name can not contain path separators")
CONSUMER_NAME_MISMATCH = (400, 10017, "consumer name in subject does not match durable name in request")
CONSUMER_EPHEMERAL_WITH_DURABLE_NAME = (400, 10020, "consumer expected to be ephemeral but a durable name was set in request")
CONSUMER_DURABLE_NAME_NOT_SET = (400, 10018, "consumer expected to be durable but a durable name was not set")
CONSUMER_MULTIPLE_FILTERS_IN_SUBJECT = (400, 10137, "consumer with multiple subject filters cannot use subject based API")
CONSUMER_FILTER_MISMATCH = (400, 10131, "Consumer create request did not match filtered subject from create subject")
CONSUMER_FILTER_NOT_SUBSET = (400, 10093, "consumer filter subject is not a valid subset of the interest subjects")
CONSUMER_DUPLICATE_FILTERS = (400, 10136, "consumer cannot have both FilterSubject and FilterSubjects specified")
CONSUMER_OVERLAPPING_FILTERS = (400, 10138, "consumer subject filters cannot overlap")
CONSUMER_INVALID_DELIVER_SUBJECT = (400, 10112, "invalid push consumer deliver subject")
CONSUMER_WQ_EXPLICIT_ACK = (400, 10098, "workqueue stream requires explicit ack")
CONSUMER_WQ_MULTIPLE_UNFILTERED = (400, 10099, "multiple non-filtered consumers not allowed on workqueue stream")
CONSUMER_WQ_OVERLAP = (400, 10100, "filtered consumer not unique on workqueue stream")
CONSUMER_MAX_DELIVER_BACKOFF = (400, 10116, "max deliver is required to be > length of backoff values")
CONSUMER_DOES_NOT_EXIST = (400, 10149, "consumer does not exist")
STREAM_SEALED = (400, 10109, "invalid operation on sealed stream")
CONSUMER_SMALL_HEARTBEAT = (400, 10083, "consumer idle heartbeat needs to be >= 100ms")
CONSUMER_HEARTBEAT_NEEDS_PUSH = (400, 10088, "consumer idle heartbeat requires a push based consumer")
CONSUMER_FLOW_CONTROL_NEEDS_PUSH = (400, 10089, "consumer flow control requires a push based consumer")
CONSUMER_FLOW_CONTROL_NEEDS_HEARTBEATS = (400, 10108, "consumer with flow control also needs heartbeats")
CONSUMER_MAX_ACK_PENDING_EXCESS = (400, 10121, "consumer max ack pending exceeds system limit of {limit}")
CONSUMER_INACTIVE_THRESHOLD_EXCESS = (400, 10153, "consumer inactive threshold exceeds system limit of {limit}")
CLUSTERING_REQUIRED = (503, 10010, "JetStream clustering support required")
INTERNAL = (500, 10012, "internal error: {err}")
