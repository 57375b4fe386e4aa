"""flowmq-bench: a load generator and benchmark for NATS-protocol brokers.

In the spirit of ``nats bench``: raw NATS protocol over plain sockets from
separate worker processes, so that the generator outruns the broker. It
measures FlowMQ (started by the tool, or any server given with ``--url``)
and, with ``--compare``, nats-server side by side. Run
``python -m flowmq.bench --help`` (or ``flowmq-bench --help``).

Modules, one job each:

- ``cli``: the command line and ``main()``
- ``suite``: runs the chosen scenarios against each server
- ``scenarios``: one function per scenario (workers, barrier, results)
- ``launch``: starts worker processes and gathers their reports
- ``pubsub``, ``reqrep``, ``idle``: the worker processes
- ``jetstream``: the $JS.API requests, the PubAck and pull scanners and the
  worker processes of the JetStream scenarios
- ``worker``: the envelope of the pubsub and reqrep workers (errors, close, report)
- ``protocol``: NATS frames, the handshake, a small parser
- ``counter``: the fast MSG frame counter of the subscribers
- ``servers``: starting and stopping FlowMQ and nats-server
- ``system``: file descriptor limit, resident memory of a process
- ``stats``: rates and percentiles
- ``progress``: the progress line on stderr
- ``report``: the text table and the JSON file
"""
