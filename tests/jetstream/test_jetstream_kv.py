"""Key-value buckets and the object store, as nats-py builds them on JetStream."""

from __future__ import annotations

import io

import nats
import nats.js.errors
import pytest

from tests.conftest import run


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


def test_key_value_put_get_create_update_delete_purge(broker):
    async def main():
        nc, js = await _connect(broker)
        kv = await js.create_key_value(bucket="config", history=5)
        assert await kv.put("db.host", b"alpha") == 1
        entry = await kv.get("db.host")
        assert (entry.key, entry.value, entry.revision) == ("db.host", b"alpha", 1)
        revision = await kv.update("db.host", b"beta", last=1)
        assert revision == 2
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.update("db.host", b"gamma", last=1)
        assert await kv.create("db.port", b"5432") == 3
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create("db.port", b"6543")
        await kv.delete("db.port")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("db.port")
        # A deleted key can be created again.
        assert await kv.create("db.port", b"6543") == 5
        keys = sorted(await kv.keys())
        assert keys == ["db.host", "db.port"]
        history = await kv.history("db.host")
        assert [e.value for e in history] == [b"alpha", b"beta"]
        await kv.purge("db.host")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("db.host")
        status = await kv.status()
        assert status.bucket == "config" and status.history == 5
        # Opening the bucket by name finds the same data.
        again = await js.key_value("config")
        assert (await again.get("db.port")).value == b"6543"
        assert await js.delete_key_value("config")
        with pytest.raises(nats.js.errors.BucketNotFoundError):
            await js.key_value("config")
        await nc.close()

    run(main())


def test_key_value_history_limit_and_revision_reads(broker):
    async def main():
        nc, js = await _connect(broker)
        kv = await js.create_key_value(bucket="counters", history=2)
        for value in (b"1", b"2", b"3"):
            await kv.put("n", value)
        history = [e.value for e in await kv.history("n")]
        old = await kv.get("n", revision=2)
        await nc.close()
        return history, old

    history, old = run(main())
    assert history == [b"2", b"3"]
    assert old.value == b"2"


def test_key_value_watch_sees_current_values_then_updates(broker):
    async def main():
        nc, js = await _connect(broker)
        kv = await js.create_key_value(bucket="watched")
        await kv.put("a", b"1")
        await kv.put("b", b"2")
        watcher = await kv.watchall()
        initial = []
        async for entry in watcher:
            if entry is None:  # the marker: the current values are all there
                break
            initial.append((entry.key, entry.value))
        await kv.put("a", b"3")
        await kv.delete("b")
        update = await watcher.updates(timeout=3)
        deletion = await watcher.updates(timeout=3)
        await watcher.stop()
        await nc.close()
        return initial, update, deletion

    initial, update, deletion = run(main())
    assert initial == [("a", b"1"), ("b", b"2")]
    assert (update.key, update.value) == ("a", b"3")
    assert (deletion.key, deletion.operation) == ("b", "DEL")


def test_key_value_watch_of_an_empty_bucket_ends_its_initial_values_at_once(broker):
    async def main():
        nc, js = await _connect(broker)
        kv = await js.create_key_value(bucket="empty")
        watcher = await kv.watchall()
        marker = await watcher.updates(timeout=3)
        with pytest.raises(nats.js.errors.NoKeysError):
            await kv.keys()
        await watcher.stop()
        await nc.close()
        return marker

    assert run(main()) is None


def test_object_store_put_get_list_delete_large_objects(broker):
    async def main():
        nc, js = await _connect(broker)
        store = await js.create_object_store("files")
        big = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: many chunks
        info = await store.put("big.bin", big)
        assert info.size == len(big) and info.chunks > 1
        await store.put("small.txt", b"hello")
        got = await store.get("big.bin")
        assert got.data == big
        sink = io.BytesIO()
        await store.get("small.txt", writeinto=sink)
        assert sink.getvalue() == b"hello"
        names = sorted(i.name for i in await store.list())
        assert names == ["big.bin", "small.txt"]
        # Replacing an object drops its old chunks.
        await store.put("big.bin", b"short now")
        assert (await store.get("big.bin")).data == b"short now"
        await store.delete("small.txt")
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await store.get("small.txt")
        assert (await store.get_info("small.txt", show_deleted=True)).deleted
        names = sorted(i.name for i in await store.list(ignore_deletes=True))
        stream = await js.stream_info("OBJ_files")
        await nc.close()
        return names, stream

    names, stream = run(main())
    assert names == ["big.bin"]
    assert stream.state.messages == 3  # big.bin's one chunk and its meta, small.txt's delete marker meta


def test_key_value_across_a_restart(start_broker, tmp_path):
    data_dir = str(tmp_path / "kv-data")
    first = start_broker(**{"broker.data_dir": data_dir})

    async def write():
        nc, js = await _connect(first)
        kv = await js.create_key_value(bucket="durable")
        await kv.put("k", b"v1")
        await kv.put("k", b"v2")
        await nc.close()

    run(write())
    first.stop()
    second = start_broker(**{"broker.data_dir": data_dir})

    async def read():
        nc, js = await _connect(second)
        kv = await js.key_value("durable")
        entry = await kv.get("k")
        await nc.close()
        return entry

    entry = run(read())
    assert (entry.value, entry.revision) == (b"v2", 2)
