"""Settings: defaults, the TOML file, command-line overrides, and errors that
name the key and the file."""

from __future__ import annotations

import os

import pytest

from flowmq import config

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "etc", "flowmq.toml")


def test_defaults():
    settings = config.defaults()
    assert settings.nats.port == 4222
    assert settings.nats.max_payload == 1048576
    assert settings.nats.ping_interval == 120.0
    assert settings.broker.data_dir == "flowmq-data"
    assert settings.source is None


def test_example_file_lists_every_setting_with_its_default():
    with open(EXAMPLE) as f:
        text = f.read()
    for setting in config.SETTINGS:
        shown = ("\n%s = " if setting.default not in (None, ()) else "\n# %s")
        assert shown % setting.key in text or "[[%s]]" % setting.name in text, setting.name
    loaded, defaults = config.load(EXAMPLE, {}), config.defaults()
    for setting in config.SETTINGS:  # a protocol's override of a [limits] key has the [limits] value
        assert getattr(getattr(loaded, setting.section), setting.key) == getattr(
            getattr(defaults, setting.section), setting.key)


def test_file_then_overrides(tmp_path):
    path = tmp_path / "flowmq.toml"
    path.write_text('[nats]\nport = 5222\nmax_payload = 2048\n[broker]\ndata_dir = "/srv/flowmq"\n')
    settings = config.load(str(path), {"nats.port": "6222", "nats.enabled": "false"})
    assert settings.nats.port == 6222  # the command line wins
    assert settings.nats.max_payload == 2048  # from the file
    assert settings.nats.enabled is False
    assert settings.broker.data_dir == "/srv/flowmq"
    assert settings.nats.max_pings_out == 2  # default
    assert settings.source == str(path)


@pytest.mark.parametrize(
    "document, message",
    [
        ("[nats]\nprot = 1\n", "unknown setting 'nats.prot'"),
        ("[natz]\nport = 1\n", "unknown section [natz]"),
        ("[nats]\nport = 'abc'\n", "nats.port = 'abc' is not valid: must be a whole number"),
        ("[nats]\nping_interval = 'soon'\n", "nats.ping_interval = 'soon' is not valid: must be a number"),
        ("[nats]\nport = 70000\n", "nats.port = 70000 is not valid: must be between 0 and 65535"),
        ("[nats]\nmax_payload = 0\n", "nats.max_payload = 0 is not valid: must be greater than 0"),
        ("[nats]\nmax_payload = 1.5\n", "nats.max_payload = 1.5 is not valid: must be a whole number"),
        ("[nats]\nenabled = 'perhaps'\n", "nats.enabled = 'perhaps' is not valid: must be true or false"),
        ("[broker]\nlog_level = 'loud'\n", "broker.log_level = 'loud' is not valid: must be one of"),
        ("[broker]\ndata_dir = 5\n", "broker.data_dir = 5 is not valid: must be a string"),
        ("nats = 1\n", "nats must be a table"),
        ("[auth]\npassword = ''\n", "auth.password = '' is not valid: must be a non-empty string"),
        ("[[auth.users]]\nname = 'a'\npassword = ''\n", "entry 1: password must be a non-empty string"),
        ("[[auth.users]]\nname = 'a'\npublish = ['a/+b']\n", "entry 1.publish: wildcard inside level"),
        ("[[auth.tokens]]\ntoken = 't'\n", "entry 1: missing user"),
        ("[nats\n", "not valid TOML"),
        ("[limits]\nmax_pending = 0\n", "limits.max_pending = 0 is not valid: must be greater than 0"),
        ("[[nats.listeners]]\nhost = 'x'\n", "nats.listeners is not valid: entry 1: missing port"),
        ("[[nats.listeners]]\nport = 1\n[[nats.listeners]]\nport = 99999\n",
         "nats.listeners is not valid: entry 2: must be between 0 and 65535"),
        ("[[nats.listeners]]\nport = 1\ntsl = true\n", "entry 1: unknown key tsl"),
        ("[[nats.listeners]]\nport = 1\nverify = true\n", "entry 1: ca, verify and handshake_first go with"),
    ],
)
def test_file_errors_name_key_and_file(tmp_path, document, message):
    path = tmp_path / "bad.toml"
    path.write_text(document)
    with pytest.raises(config.ConfigError) as caught:
        config.load(str(path), {})
    assert str(caught.value).startswith(str(path) + ": ")
    assert message in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(str(tmp_path / "absent.toml"), {})


def test_command_line_errors_name_the_option_source():
    with pytest.raises(config.ConfigError, match=r"the command line: nats.port = 'x' is not valid"):
        config.load(None, {"nats.port": "x"})


def test_readme_documents_every_setting():
    with open(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "README.md")) as f:
        text = f.read()
    for setting in config.SETTINGS:
        option = "`--%s`" % setting.option if setting.cli else "file only"
        assert "| `%s` | %s |" % (setting.name, option) in text, setting.name


def test_limits_are_shared_and_a_protocol_may_override_them(tmp_path):
    path = tmp_path / "flowmq.toml"
    path.write_text("[limits]\nmax_payload = 2048\nping_interval = 5.0\n[nats]\nping_interval = 7.5\n")
    settings = config.load(str(path), {})
    assert settings.limits.max_payload == settings.nats.max_payload == 2048  # from [limits]
    assert settings.nats.ping_interval == 7.5  # NATS's own, over [limits]
    assert settings.nats.max_pings_out == settings.limits.max_pings_out == 2
    settings = config.load(str(path), {"limits.max_payload": "4096", "nats.max_pending": "1000"})
    assert settings.nats.max_payload == 4096 and settings.nats.max_pending == 1000


def test_listeners_from_the_command_line():
    settings = config.load(None, {"nats.listeners": "tls://0.0.0.0:4443, tcp://[::1]:4223"})
    first, second = settings.nats.listeners
    assert (first["host"], first["port"], first["tls"]) == ("0.0.0.0", 4443, True)
    assert (second["host"], second["port"], second["tls"]) == ("::1", 4223, False)
    with pytest.raises(config.ConfigError, match=r"the command line: nats.listeners = 'http://x:1' is not valid: "
                                                 r"entry 1: 'http://x:1' is not tcp://HOST:PORT"):
        config.load(None, {"nats.listeners": "http://x:1"})
