"""FlowMQ as a user runs it: ``twistd -n flowmq`` and ``twistd -ny etc/flowmq.tac``
as subprocesses on ephemeral ports, a nats-py round trip, then SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import nats
import pytest

from conftest import run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def _twistd_command():
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _start(args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    return subprocess.Popen(
        _twistd_command() + args, cwd=str(cwd), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _wait_for_line(process, log, pattern):
    """Read the log until a line matches ``pattern``; the match."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        log.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    process.kill()
    pytest.fail("no line matching %r in the log:\n%s" % (pattern, "".join(log)))


def _wait_for_port(process, log):
    """Read the log until the NATS listener says where it listens."""
    return int(_wait_for_line(process, log, r"NATS listening on [\d.]+:(\d+)").group(1))


def _round_trip(port):
    async def scenario():
        nc = await nats.connect("nats://127.0.0.1:%d" % port)
        sub = await nc.subscribe("greetings.*")
        await nc.publish("greetings.world", b"hello")
        msg = await sub.next_msg(timeout=10)
        await nc.close()
        return msg.subject, msg.data

    return run(scenario())


def _stop(process, log):
    """SIGTERM, then the exit status; twistd ends by re-raising the signal
    after a clean shutdown, so a graceful stop shows as -SIGTERM."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    log.append(out.decode())
    assert "Main loop terminated." in log[-1]
    return process.returncode


def test_twistd_flowmq_serves_nats_and_stops_on_sigterm(tmp_path):
    log = []
    process = _start(["-n", "--pidfile=", "flowmq", "--nats-host", "127.0.0.1", "--nats-port", "0",
                      "--mqtt-host", "127.0.0.1", "--mqtt-port", "0"], tmp_path)
    port = _wait_for_port(process, log)
    assert _round_trip(port) == ("greetings.world", b"hello")
    assert _stop(process, log) == -signal.SIGTERM
    text = "".join(log)
    assert "FlowMQ 0.1.0 starting" in text
    assert "settings from embedded defaults" in text
    assert "data directory: %s" % (tmp_path / "flowmq-data") in text
    assert "FlowMQ shutting down" in text
    assert (tmp_path / "flowmq-data").is_dir()


def test_sigusr2_is_logged_and_ignored(tmp_path):
    """nats-server enters lame-duck mode on SIGUSR2; FlowMQ has none yet, and
    must not die of the signal's default action."""
    log = []
    process = _start(["-n", "--pidfile=", "flowmq", "--nats-host", "127.0.0.1", "--nats-port", "0",
                      "--mqtt-host", "127.0.0.1", "--mqtt-port", "0"], tmp_path)
    port = _wait_for_port(process, log)
    # Once a client is served the reactor runs, so every service has started
    # (the port listens a little earlier, from privilegedStartService).
    assert _round_trip(port) == ("greetings.world", b"hello")
    process.send_signal(signal.SIGUSR2)
    _wait_for_line(process, log, r"SIGUSR2: lame-duck mode is not supported yet; ignoring")
    assert process.poll() is None
    assert _round_trip(port) == ("greetings.world", b"hello")
    assert _stop(process, log) == -signal.SIGTERM
    assert "FlowMQ shutting down" in "".join(log)


def test_config_file_and_override(tmp_path):
    conf = tmp_path / "flowmq.toml"
    conf.write_text('[nats]\nhost = "127.0.0.1"\nport = 0\nmax_payload = 4096\n'
                    '[mqtt]\nhost = "127.0.0.1"\nport = 0\n'
                    '[broker]\ndata_dir = "%s"\n' % (tmp_path / "elsewhere"))
    log = []
    process = _start(["-n", "--pidfile=", "flowmq", "--config", str(conf), "--nats-max-payload", "2048"], tmp_path)
    port = _wait_for_port(process, log)

    async def scenario():
        nc = await nats.connect("nats://127.0.0.1:%d" % port)
        size = nc.max_payload
        await nc.close()
        return size

    assert run(scenario()) == 2048
    assert _stop(process, log) == -signal.SIGTERM
    assert "settings from %s" % conf in "".join(log)
    assert (tmp_path / "elsewhere").is_dir()


def test_config_error_names_key_and_file(tmp_path):
    conf = tmp_path / "broken.toml"
    conf.write_text("[nats]\nport = 'four'\n")
    process = _start(["-n", "--pidfile=", "flowmq", "--config", str(conf)], tmp_path)
    out, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert out.decode().strip().splitlines() == [
        "flowmq: configuration error: %s: nats.port = 'four' is not valid: must be a whole number" % conf
    ]


def test_port_in_use_is_a_startup_error(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    process = _start(["-n", "--pidfile=", "flowmq", "--nats-host", "127.0.0.1", "--nats-port", str(port),
                      "--mqtt-host", "127.0.0.1", "--mqtt-port", "0"], tmp_path)
    out, _ = process.communicate(timeout=30)
    taken.close()
    assert process.returncode != 0
    assert "Address already in use" in out.decode() or "address already in use" in out.decode().lower()


def test_tac_file_runs_the_same_service(tmp_path):
    conf = tmp_path / "flowmq.toml"
    conf.write_text('[nats]\nhost = "127.0.0.1"\nport = 0\n[mqtt]\nhost = "127.0.0.1"\nport = 0\n')
    log = []
    process = _start(["-ny", os.path.join(ROOT, "etc", "flowmq.tac"), "--pidfile="], tmp_path,
                     {"FLOWMQ_CONFIG": str(conf)})
    port = _wait_for_port(process, log)
    assert _round_trip(port) == ("greetings.world", b"hello")
    assert _stop(process, log) == -signal.SIGTERM


def test_help_documents_every_setting():
    from flowmq import config

    out = subprocess.run(_twistd_command() + ["flowmq", "--help"], capture_output=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout.decode()
    for setting in config.SETTINGS:
        if setting.cli:
            assert "--" + setting.option in out
        else:  # structured: the help names it and says it is for the file
            assert setting.name in out
    assert "--config" in out


def test_unreadable_certificate_is_a_startup_error_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere.pem"
    process = _start(["-n", "--pidfile=", "flowmq", "--tls-cert", str(missing), "--tls-key", str(missing)],
                     tmp_path)
    out, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert out.decode().strip().splitlines() == [
        "flowmq: configuration error: the command line: tls.cert: cannot load %s: "
        "No such file or directory" % missing
    ]
