"""The worker process of the idle-connections scenario: it opens its share of
the connections one after the other (connect, CONNECT, PING, wait for PONG),
reports how many it holds, keeps them open until the coordinator has read
the server's memory, then closes them."""

from __future__ import annotations

import time

from flowmq.bench import protocol


def holder(slot, opts, count, stop, counters, results):
    result = {"role": "idle", "slot": slot, "opened": 0, "errors": []}
    socks = []
    try:
        deadline = time.monotonic() + opts["max_time"]
        for _ in range(count):
            if time.monotonic() > deadline:
                result["errors"].append("idle: ran out of time (--max-time) opening connections")
                break
            sock = None
            try:
                sock = protocol.connect(opts["host"], opts["port"])
                protocol.handshake(sock, timeout=opts["setup_timeout"])
            except (OSError, protocol.BenchError) as e:
                if sock is not None:
                    sock.close()
                result["errors"].append("idle: connection %d: %s" % (len(socks) + 1, e))
                break
            socks.append(sock)
            counters[slot] = len(socks)
        result["opened"] = len(socks)
        results.put(result)
        stop.wait(opts["max_time"])
    except Exception as e:
        result["errors"].append("idle: %s" % (e,))
        results.put(result)
    finally:
        for sock in socks:
            sock.close()
