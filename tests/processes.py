"""``twistd -n flowmq`` as a subprocess, for the tests that must see the real
process: kill -9 and restart on one data directory (the ``twistd`` fixture
of conftest.py makes these)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
#: Generous: CI machines are slow, PyPy warms up.
START_TIMEOUT = 60


def _twistd_command():
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Twistd:
    """``twistd -n flowmq`` on port 0 with its own log file; ``port`` once it serves."""

    def __init__(self, workdir, data_dir, name, *options, preexec_fn=None):
        self.logfile = workdir / (name + ".log")
        self.outfile = workdir / (name + ".out")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        args = ["-n", "--pidfile=", "--logfile=%s" % self.logfile, "flowmq",
                "--nats-host", "127.0.0.1", "--nats-port", "0", "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
                "--broker-data-dir", str(data_dir)]
        with open(self.outfile, "wb") as out:
            self.process = subprocess.Popen(_twistd_command() + args + list(options), cwd=str(workdir),
                                            env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        #: Serving MQTT too (unless the options say --mqtt-enabled false); then ``mqtt_port``.
        self.mqtt = "false" not in [b for a, b in zip(options, options[1:]) if a == "--mqtt-enabled"]
        self.mqtt_port = None
        self.port = self._wait_until_ready()
        self.url = "nats://127.0.0.1:%d" % self.port

    def log(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        with open(self.outfile, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def _wait_until_ready(self) -> int:
        """The NATS port from the listening line, once JetStream (and MQTT,
        when it serves MQTT: ``mqtt_port`` is set then) says it is ready."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log()
            found = re.search(r"NATS listening on [\d.]+:(\d+)", text)
            mqtt = re.search(r"MQTT listening on [\d.]+:(\d+)", text)
            if found and "JetStream ready" in text and (not self.mqtt or mqtt and "MQTT ready" in text):
                self.mqtt_port = int(mqtt.group(1)) if mqtt else None
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.process.kill()
        self.process.wait(30)
        pytest.fail("twistd did not start (exit status %r)\nlog:\n%s\noutput:\n%s"
                    % (self.process.returncode, self.log(), self.output()))

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM and a clean shutdown."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        assert "Main loop terminated." in self.log(), self.log()
