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
    loaded = config.load(EXAMPLE, {})
    for setting in config.SETTINGS:
        assert getattr(getattr(loaded, setting.section), setting.key) == setting.default


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
