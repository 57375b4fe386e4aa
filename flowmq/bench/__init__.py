"""flowmq-bench: a load generator and benchmark for NATS and MQTT brokers.

In the spirit of ``nats bench``: raw NATS and MQTT over plain sockets from
separate worker processes, so that the generator outruns the broker. It
measures FlowMQ (started by the tool, or any server given with ``--url``)
and, with ``--compare``, nats-server (NATS scenarios) and mosquitto (MQTT
scenarios) side by side. Run ``python -m flowmq.bench --help`` (or
``flowmq-bench --help``).

Modules, one job each:

- ``cli``: the command line and ``main()``
- ``suite``: runs the chosen scenarios against each server
- ``scenarios``: one function per scenario (workers, barrier, results)
- ``launch``: starts worker processes and gathers their reports
- ``pubsub``, ``reqrep``, ``idle``: the worker processes
- ``mqttpubsub``: the MQTT publishers and subscribers
- ``mqttwire``: MQTT packets (via flowmq.mqtt.codec), the handshake, framing
- ``mqttcounter``: the fast PUBLISH and PUBACK counters of the MQTT workers
- ``jetstream``: the $JS.API requests, the PubAck and pull scanners and the
  worker processes of the JetStream scenarios
- ``worker``: the envelope of the pubsub and reqrep workers (errors, close,
  how busy the worker was, report)
- ``protocol``: NATS frames, the handshake, a small parser
- ``counter``: the subscribers' counters' buffer and scan loop, and the
  fast MSG frame counter
- ``servers``: starting and stopping FlowMQ, nats-server and mosquitto
- ``system``: file descriptor limit, resident memory of a process
- ``stats``: rates and percentiles
- ``progress``: the progress line on stderr
- ``report``: the text table and the JSON file
"""
