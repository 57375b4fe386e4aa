"""JetStream account limits: jetstream.max_memory and jetstream.max_store.

Through the wire with nats-py, against brokers started with small limits:
$JS.API.INFO reports the limits, the usage and the reservations; stream
creates and updates whose max_bytes do not fit are refused with
nats-server's 10028/10047; a publish that would pass the limit gets
nats-server's 10002 PubAck error and is not stored; purges and deletes give
the room back; file usage is counted again after a restart. Unset, the
limits come from the machine. The settings' byte sizes are parsed as
nats-server reads them.
"""

from __future__ import annotations

import json
import os
import shutil

import nats
import pytest
from nats.js.api import StorageType
from twisted.python import usage

from conftest import run
from flowmq import config, tap

MiB = 1024 * 1024
PAYLOAD = b"x" * 10_000


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


async def _account(nc) -> dict:
    return json.loads((await nc.request("$JS.API.INFO", b"")).data)


async def _fill(js, subject, limit=1000):
    """Publish PAYLOAD until the account refuses one; (stored, the error)."""
    for stored in range(limit):
        try:
            await js.publish(subject, PAYLOAD)
        except nats.js.errors.APIError as e:
            return stored, e
    raise AssertionError("%d publishes and no refusal" % limit)


def test_account_info_reports_the_limits_and_the_usage(start_broker):
    broker = start_broker(**{"jetstream.max_memory": "1MiB", "jetstream.max_store": "4MB"})

    async def main():
        nc, js = await _connect(broker)
        empty = await _account(nc)
        await js.add_stream(name="M", subjects=["m.>"], storage=StorageType.MEMORY, max_bytes=300_000)
        await js.add_stream(name="F", subjects=["f.>"], storage=StorageType.FILE)
        for i in range(5):
            await js.publish("m.%d" % i, PAYLOAD)
        await js.publish("f.a", PAYLOAD)
        used = await _account(nc)
        streams = (await js.stream_info("M")).state.bytes, (await js.stream_info("F")).state.bytes
        await nc.close()
        return empty, used, streams

    empty, used, (memory_bytes, file_bytes) = run(main())
    assert empty["limits"]["max_memory"] == MiB
    assert empty["limits"]["max_storage"] == 4 * MiB  # MB is 1024^2, as nats-server reads it
    assert (empty["memory"], empty["storage"], empty["reserved_memory"], empty["reserved_storage"]) == (0, 0, 0, 0)
    assert used["memory"] == memory_bytes > 5 * len(PAYLOAD)
    assert used["storage"] == file_bytes > len(PAYLOAD)
    assert (used["reserved_memory"], used["reserved_storage"]) == (300_000, 0)
    assert used["limits"]["max_memory"] == MiB


def test_a_memory_stream_cannot_grow_past_the_account_limit(start_broker):
    broker = start_broker(**{"jetstream.max_memory": "1MiB"})

    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="M", subjects=["m.>"], storage=StorageType.MEMORY)
        stored, refused = await _fill(js, "m.a")
        full = await js.stream_info("M")
        with pytest.raises(nats.js.errors.APIError) as again:
            await js.publish("m.b", PAYLOAD)  # on another subject too
        still = await js.stream_info("M")
        account = await _account(nc)
        # Room comes back when messages go.
        await js.purge_stream("M")
        await js.publish("m.a", PAYLOAD)
        await js.delete_stream("M")
        after_delete = await _account(nc)
        await nc.close()
        return stored, refused, full.state, again.value, still.state, account, after_delete

    stored, refused, full, again, still, account, after_delete = run(main())
    # nats-server's answer to a publish past the account's limit.
    assert (refused.code, refused.err_code, refused.description) == (
        400, 10002, "resource limits exceeded for account")
    assert again.err_code == 10002
    assert stored == full.messages == full.last_seq > 90  # most of the MiB, then no more
    assert full.bytes <= MiB < full.bytes + len(PAYLOAD)
    assert (still.messages, still.last_seq, still.bytes) == (full.messages, full.last_seq, full.bytes)
    assert account["memory"] == full.bytes
    assert after_delete["memory"] == 0


def test_max_bytes_reservations_must_fit_the_limits(start_broker):
    broker = start_broker(**{"jetstream.max_memory": "1MiB", "jetstream.max_store": 4 * MiB})

    async def main():
        nc, js = await _connect(broker)
        refused = []

        async def attempt(coroutine):
            try:
                await coroutine
            except nats.js.errors.APIError as e:
                refused.append((e.code, e.err_code, e.description))
                return
            refused.append("ok")

        await attempt(js.add_stream(name="BIG", subjects=["big"], storage=StorageType.MEMORY, max_bytes=2 * MiB))
        await attempt(js.add_stream(name="HUGE", subjects=["huge"], storage=StorageType.FILE, max_bytes=8 * MiB))
        await attempt(js.add_stream(name="A", subjects=["a"], storage=StorageType.MEMORY, max_bytes=600_000))
        await attempt(js.add_stream(name="B", subjects=["b"], storage=StorageType.MEMORY, max_bytes=600_000))
        await attempt(js.add_stream(name="B", subjects=["b"], storage=StorageType.MEMORY))  # reserves nothing
        await attempt(js.update_stream(name="A", subjects=["a"], storage=StorageType.MEMORY, max_bytes=MiB))
        await attempt(js.update_stream(name="A", subjects=["a"], storage=StorageType.MEMORY, max_bytes=MiB + 1))
        await attempt(js.add_stream(name="C", subjects=["c"], storage=StorageType.MEMORY))  # not one byte left
        await attempt(js.add_stream(name="D", subjects=["d"], storage=StorageType.FILE, max_bytes=4 * MiB))
        account = await _account(nc)
        await nc.close()
        return refused, account

    refused, account = run(main())
    memory = (500, 10028, "insufficient memory resources available")
    storage = (500, 10047, "insufficient storage resources available")
    assert refused == [memory, storage, "ok", memory, "ok", "ok", memory, memory, "ok"]
    assert (account["reserved_memory"], account["reserved_storage"]) == (MiB, 4 * MiB)


def test_zero_allows_no_stream_of_that_storage(start_broker):
    broker = start_broker(**{"jetstream.max_memory": "0"})

    async def main():
        nc, js = await _connect(broker)
        with pytest.raises(nats.js.errors.APIError) as refused:
            await js.add_stream(name="M", subjects=["m"], storage=StorageType.MEMORY)
        await js.add_stream(name="F", subjects=["f"], storage=StorageType.FILE)
        await nc.close()
        return refused.value

    assert run(main()).err_code == 10028


def test_file_usage_is_counted_again_after_a_restart(start_broker):
    limits = {"jetstream.max_store": "256KiB"}
    broker = start_broker(**limits)

    async def fill():
        nc, js = await _connect(broker)
        await js.add_stream(name="F", subjects=["f.>"], storage=StorageType.FILE)
        stored, refused = await _fill(js, "f.a")
        account = await _account(nc)
        await nc.close()
        return stored, refused.err_code, account["storage"]

    stored, refused, storage = run(fill())
    assert refused == 10002 and 20 <= stored
    broker.stop()
    broker = start_broker(**limits)

    async def after_restart():
        nc, js = await _connect(broker)
        account = await _account(nc)
        with pytest.raises(nats.js.errors.APIError) as still_full:
            await js.publish("f.a", PAYLOAD)
        await js.purge_stream("F")
        await js.publish("f.a", PAYLOAD)
        await nc.close()
        return account, still_full.value.err_code

    account, still_full = run(after_restart())
    assert account["storage"] == storage
    assert still_full == 10002


def test_the_limits_default_to_what_the_machine_has(start_broker, tmp_path):
    broker = start_broker()

    async def main():
        nc = await nats.connect(broker.url)
        account = await _account(nc)
        await nc.close()
        return account["limits"]

    limits = run(main())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < limits["max_memory"] <= memory * 3 // 4
    assert 0 < limits["max_storage"] <= shutil.disk_usage(str(tmp_path)).total


def test_minus_one_is_no_limit(start_broker):
    broker = start_broker(**{"jetstream.max_memory": "-1", "jetstream.max_store": -1})

    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="M", subjects=["m"], storage=StorageType.MEMORY, max_bytes=2 ** 50)
        account = await _account(nc)
        await nc.close()
        return account

    account = run(main())
    assert (account["limits"]["max_memory"], account["limits"]["max_storage"]) == (-1, -1)
    assert account["reserved_memory"] == 2 ** 50


@pytest.mark.parametrize("raw, value", [
    (1048576, 1048576), ("1048576", 1048576), ("1MiB", MiB), ("1MB", MiB), ("1mb", MiB), ("1M", 10 ** 6),
    ("2 GiB", 2 * 1024 ** 3), ("3k", 3000), ("3KB", 3072), ("1T", 10 ** 12), ("1TiB", 1024 ** 4), ("0", 0),
    (-1, -1), ("-1", -1),
])
def test_byte_sizes(raw, value):
    assert config.load(None, {"jetstream.max_memory": raw}).jetstream.max_memory == value


@pytest.mark.parametrize("raw", ["1.5G", "lots", "1XB", -2, "-5MiB", "", True, 2 ** 63])
def test_bad_byte_sizes_name_the_setting(raw):
    with pytest.raises(config.ConfigError, match=r"jetstream\.max_store = .* is not valid: must be"):
        config.load(None, {"jetstream.max_store": raw})


def test_the_limits_are_options(tmp_path):
    options = tap.Options()
    text = str(options)
    assert "--jetstream-max-memory" in text and "--jetstream-max-store" in text
    options.parseOptions(["--jetstream-max-memory", "64MiB", "--broker-data-dir", str(tmp_path)])
    assert options.settings.jetstream.max_memory == 64 * MiB
    assert options.settings.jetstream.max_store is None  # from the machine, at start-up
    with pytest.raises((usage.UsageError, SystemExit)):
        tap.Options().parseOptions(["--jetstream-max-store", "much"])
