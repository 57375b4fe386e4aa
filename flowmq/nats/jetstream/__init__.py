"""JetStream: nats-server's persistence layer, as nats-py 2.10+ speaks to it.

- ``errors``: the API's JSON error objects, with nats-server's codes.
- ``wire``: JSON field helpers (durations in ns, RFC 3339 times, header blocks).
- ``config``: stream and consumer configurations, checked and filled in.
- ``stream``: a stream — a Stream destination in the core router whose
  messages go to the storage engine, with dedupe, expectations and PubAcks.
- ``consumer``: push and pull consumers: delivery, acks, redelivery.
- ``api``: the request handlers of ``$JS.API.>``.
- ``service``: the service that owns the streams, listens on the API and
  ack subjects and restores everything at start-up.
"""
