"""Durable things namespaced by kind: the same name in two kinds are two
streams; a data directory laid out before the namespacing (JetStream's
streams in <data_dir>/streams/<name>) is read in place."""

from __future__ import annotations

import json
import os

import pytest
from nats.js.api import StorageType

from flowmq.core.store import FileStore, Limits, StorageEngine
from flowmq.core.store.engine import KINDS
from tests.conftest import run


def test_the_same_name_in_two_kinds_never_collides(tmp_path):
    engine = StorageEngine(str(tmp_path), fsync="never")
    orders = {kind: engine.open_stream(kind, "orders", Limits()) for kind in KINDS}
    assert len({id(store) for store in orders.values()}) == len(KINDS)
    for n, (kind, store) in enumerate(sorted(orders.items())):
        for _ in range(n + 1):
            store.append("t", None, kind.encode())
        engine.write_meta(kind, "orders", "config", {"kind": kind})
    engine.open_stream("kafka", "only-kafka", Limits())
    engine.remove_stream("amqp", "orders")
    engine.close()
    engine = StorageEngine(str(tmp_path), fsync="never")
    assert engine.stream_names("jetstream") == ["orders"]
    assert engine.stream_names("kafka") == ["only-kafka", "orders"]
    assert engine.stream_names("amqp") == [] and engine.read_meta("amqp", "orders", "config") is None
    for n, kind in enumerate(sorted(KINDS)):
        if kind == "amqp":
            continue
        store = engine.open_stream(kind, "orders", Limits())
        assert store.state().messages == n + 1 and store.get(1).payload == kind.encode()
        assert engine.read_meta(kind, "orders", "config") == {"kind": kind}
    engine.close()


@pytest.mark.parametrize("kind", ["", "JetStream", "nats", None, 1])
def test_an_unknown_kind_is_refused(tmp_path, kind):
    engine = StorageEngine(str(tmp_path))
    for call in (lambda: engine.open_stream(kind, "s", Limits()), lambda: engine.stream_names(kind),
                 lambda: engine.write_meta(kind, "s", "k", {}), lambda: engine.remove_stream(kind, "s"),
                 lambda: engine.open_stream(kind, "s", Limits(), storage="memory")):
        with pytest.raises(ValueError):
            call()
    engine.close()


def _old_layout(data_dir, name="ORDERS", messages=3):
    """A JetStream stream as FlowMQ wrote it before the namespacing:
    <data_dir>/streams/<name>/ with its segments and tombstones, and its
    configuration in meta/stream.json (topics as the store keeps them: unified, "/")."""
    directory = os.path.join(str(data_dir), "streams", name)
    store = FileStore(directory, Limits(), name=name)
    for n in range(messages):
        store.append("orders/%d" % n, None, b"old-%d" % n, timestamp=1000 + n)
    store.close()
    os.makedirs(os.path.join(directory, "meta"))
    config = {"name": name, "subjects": ["orders.>"], "storage": "file"}
    with open(os.path.join(directory, "meta", "stream.json"), "w") as handle:
        json.dump({"config": config, "created": 1}, handle)
    return directory


def test_a_data_directory_of_the_old_layout_is_jetstreams_read_in_place(tmp_path):
    directory = _old_layout(tmp_path)
    before = sorted(os.listdir(directory))
    engine = StorageEngine(str(tmp_path), fsync="never")
    assert engine.stream_names("jetstream") == ["ORDERS"]
    assert engine.stream_names("kafka") == []
    store = engine.open_stream("jetstream", "ORDERS", Limits())
    assert store.directory == directory  # nothing moved
    assert [store.get(n).payload for n in (1, 2, 3)] == [b"old-0", b"old-1", b"old-2"]
    assert engine.read_meta("jetstream", "ORDERS", "stream")["config"]["subjects"] == ["orders.>"]
    assert engine.open_stream("kafka", "ORDERS", Limits()).state().messages == 0  # another kind's, empty
    engine.close()
    assert sorted(os.listdir(directory)) == before


def test_jetstream_serves_an_old_layout_stream_after_the_upgrade(start_broker, tmp_path):
    """Through the wire: a broker started on an old data directory serves its stream."""
    _old_layout(tmp_path / "data")
    broker = start_broker()

    async def scenario():
        import nats

        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        info = await js.stream_info("ORDERS")
        message = await js.get_msg("ORDERS", 2)
        ack = await js.publish("orders.new", b"new")
        await nc.close()
        return info, message, ack

    info, message, ack = run(scenario())
    assert info.config.storage == StorageType.FILE and info.state.messages == 3
    assert message.data == b"old-1" and message.subject == "orders.1"
    assert ack.stream == "ORDERS" and ack.seq == 4
