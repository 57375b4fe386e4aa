"""Eclipse Mosquitto's command line clients against the broker.

``mosquitto_sub`` and ``mosquitto_pub`` (Debian's mosquitto-clients; .ci/run
installs them) run as subprocesses: a second, independent MQTT client
implementation for 3.1, 3.1.1 and 5.0, QoS 0 to 2, retained messages, MQTT 5
user properties, persistent sessions, and the bridge to NATS both ways. The
tests are skipped only when the binaries are missing.

``mosquitto_sub`` runs under ``stdbuf -oL`` with ``-d`` (its debug lines
tell when its SUBACK came, so the publish is sent after the subscription is
in place) and ``-F``
printing each message as ``MSG|topic|qos|retain|payload|user properties``.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import threading

import nats
import pytest

from conftest import flushed, made_by, run

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
STDBUF = shutil.which("stdbuf")  # mosquitto_sub's output to a pipe is line-buffered only through it

pytestmark = pytest.mark.skipif(None in (MOSQUITTO_SUB, MOSQUITTO_PUB, STDBUF),
                                reason="mosquitto_sub/mosquitto_pub (Debian: mosquitto-clients) or stdbuf missing")

#: Generous: the CI machine has two loaded cores.
TIMEOUT = 30
FORMAT = "MSG|%t|%q|%r|%p|%P"
VERSIONS = pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv5"])


class Subscriber:
    """A mosquitto_sub in the background; a thread reads its output lines."""

    def __init__(self, port: int, topic: str, *options: str):
        command = [STDBUF, "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-d", "-F", FORMAT,
                   "-W", str(4 * TIMEOUT)] + list(options)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen = []
        self._messages = []  # MSG lines passed while another line was expected
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect("received SUBACK")

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def expect(self, text: str) -> str:
        """The next output line that contains ``text``."""
        while True:
            try:
                line = self._lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError("mosquitto_sub printed no %r; its output: %r" % (text, self.seen)) from None
            if line is None:
                raise AssertionError("mosquitto_sub ended without %r; its output: %r" % (text, self.seen))
            self.seen.append(line)
            if text in line:
                return line
            if line.startswith("MSG|"):
                self._messages.append(line)

    def message(self) -> tuple:
        """The next message: (topic, qos, retain, payload, user properties), as printed."""
        line = self._messages.pop(0) if self._messages else self.expect("MSG|")
        return tuple(line.split("|", 5)[1:])

    def stop(self) -> None:
        """Kill it: its SIGTERM handler (a DISCONNECT from a signal handler) now and then hangs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)  # it reads to the end of the output, then the pipe is closed
        self.process.stdout.close()


@pytest.fixture
def mosquitto_sub(broker):
    """Start a mosquitto_sub on ``broker``: ``mosquitto_sub(topic, *options)``, subscribed when it returns."""
    yield from made_by(lambda topic, *options: Subscriber(broker.mqtt_port, topic, *options), Subscriber.stop)


@pytest.fixture
def mosquitto_pub(broker):
    """Run mosquitto_pub against ``broker``: ``mosquitto_pub(topic, message, *options)``
    (``message`` None: the options say what to send, ``-n`` an empty message)."""
    def publish(topic: str, message, *options: str) -> None:
        command = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(broker.mqtt_port), "-t", topic]
        if message is not None:
            command += ["-m", message]
        done = subprocess.run(command + list(options), timeout=TIMEOUT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        assert done.returncode == 0, done.stdout
    return publish


@VERSIONS
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_sub_receives_pub(mosquitto_sub, mosquitto_pub, version, qos):
    subscriber = mosquitto_sub("mosq/+", "-q", qos, "-V", version)
    mosquitto_pub("mosq/t", "hello %s q%s" % (version, qos), "-q", qos, "-V", version)
    assert subscriber.message() == ("mosq/t", qos, "0", "hello %s q%s" % (version, qos), "")


@pytest.mark.parametrize("publisher, subscriber", [("mqttv5", "mqttv311"), ("mqttv311", "mqttv5")])
def test_versions_mixed(mosquitto_sub, mosquitto_pub, publisher, subscriber):
    """A message crosses protocol levels; the QoS is the lower of the publish's and the subscription's."""
    sub = mosquitto_sub("mix/#", "-q", "1", "-V", subscriber)
    mosquitto_pub("mix/a/b", "across", "-q", "2", "-V", publisher)
    assert sub.message() == ("mix/a/b", "1", "0", "across", "")


@VERSIONS
def test_retained_message_for_a_later_subscriber(mosquitto_sub, mosquitto_pub, version):
    """-r keeps the message: a mosquitto_sub that comes later gets it with RETAIN set;
    an empty retained message (-n) clears it."""
    mosquitto_pub("keep/t", "kept", "-r", "-q", "1", "-V", version)
    assert mosquitto_sub("keep/#", "-q", "1", "-V", version).message() == ("keep/t", "1", "1", "kept", "")
    mosquitto_pub("keep/t", None, "-r", "-n", "-V", version)
    later = mosquitto_sub("keep/#", "-V", version)
    mosquitto_pub("keep/marker", "after", "-V", version)
    assert later.message() == ("keep/marker", "0", "0", "after", "")  # nothing retained came first


def test_user_properties(mosquitto_sub, mosquitto_pub):
    """MQTT 5 user properties reach the subscriber in order, repeats and spaces kept (MQTT-3.3.2-17/18)."""
    subscriber = mosquitto_sub("props/t", "-V", "mqttv5", "-q", "1")
    mosquitto_pub("props/t", "with properties", "-V", "mqttv5", "-q", "1", "-D", "publish", "user-property", "k", "v",
                  "-D", "publish", "user-property", "k", "v two", "-D", "publish", "user-property", "a", "b")
    assert subscriber.message() == ("props/t", "1", "0", "with properties", "k:v k:v two a:b")


def test_user_properties_are_not_sent_to_311(mosquitto_sub, mosquitto_pub):
    subscriber = mosquitto_sub("props/t", "-V", "mqttv311")
    mosquitto_pub("props/t", "plain", "-V", "mqttv5", "-D", "publish", "user-property", "k", "v")
    assert subscriber.message() == ("props/t", "0", "0", "plain", "")


def test_persistent_session_gets_what_came_while_away(broker, mosquitto_sub, mosquitto_pub):
    """-c (clean session 0) with an id: QoS 1 messages published while
    mosquitto_sub is away (killed: no DISCONNECT) wait in its session and
    come when it is back."""
    first = mosquitto_sub("away/t", "-c", "-i", "mosq-away", "-q", "1", "-V", "mqttv311")
    first.stop()
    mosquitto_pub("away/t", "while away", "-q", "1")
    back = Subscriber(broker.mqtt_port, "away/t", "-c", "-i", "mosq-away", "-q", "1", "-V", "mqttv311")
    try:
        assert back.message() == ("away/t", "1", "0", "while away", "")
    finally:
        back.stop()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_nats_publish_reaches_mosquitto_sub(broker, mosquitto_sub, version):
    """A NATS publish on ``a.b`` is the MQTT topic ``a/b``; NATS headers are MQTT 5 user properties."""
    subscriber = mosquitto_sub("nats/+/b", "-q", "1", "-V", version)

    async def publish():
        client = await nats.connect(broker.url)
        await client.publish("nats.a.b", b"from nats", headers={"origin": "nats-py"})
        await flushed(client)
        await client.close()

    run(publish())
    properties = "origin:nats-py" if version == "mqttv5" else ""
    assert subscriber.message() == ("nats/a/b", "1", "0", "from nats", properties)


def test_mosquitto_pub_reaches_nats(broker, mosquitto_pub):
    """The other way: an MQTT publish on ``m/q`` is the NATS subject ``m.q``, user properties its headers."""
    async def scenario():
        client = await nats.connect(broker.url)
        subscription = await client.subscribe("m.q")
        await flushed(client)
        await asyncio.to_thread(mosquitto_pub, "m/q", "from mosquitto", "-q", "1", "-V", "mqttv5",
                                "-D", "publish", "user-property", "k", "v")
        message = await subscription.next_msg(timeout=TIMEOUT)
        await client.close()
        return message

    message = run(scenario())
    assert (message.subject, message.data, message.headers["k"]) == ("m.q", b"from mosquitto", "v")
