"""Tests of app/settings.py: defaults, environment, overrides, and named rejections."""

from __future__ import annotations

import pytest

from app.settings import ApiSettings, load_settings
from training.core.errors import ConfigError


def test_defaults_without_environment():
    settings = load_settings(environ={})

    assert settings == ApiSettings()
    assert settings.MODEL_POLL_SECONDS == 30.0
    assert settings.MAX_BODY_BYTES == 1024 * 1024
    assert settings.MAX_INSTANCES == 10_000
    assert settings.LOG_REQUESTS is False


def test_environment_strings_are_converted_and_overrides_win():
    environ = {"MODEL_STORE": "gs://bucket/prefix", "MODEL_POLL_SECONDS": "0.5", "MAX_INSTANCES": "7",
               "LOG_REQUESTS": "true", "LOG_FORMAT": "json", "UNRELATED": "x"}

    settings = load_settings(environ=environ, overrides={"MAX_INSTANCES": 3})

    assert settings.MODEL_STORE == "gs://bucket/prefix"
    assert settings.MODEL_POLL_SECONDS == 0.5
    assert settings.MAX_INSTANCES == 3
    assert settings.LOG_REQUESTS is True
    assert settings.LOG_FORMAT == "json"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("MODEL_POLL_SECONDS", "soon", "a number"),
    ("MODEL_POLL_SECONDS", "0", "seconds > 0"),
    ("MODEL_POLL_SECONDS", "nan", "finite number of seconds"),
    ("MODEL_POLL_SECONDS", "inf", "finite number of seconds"),
    ("STORE_TIMEOUT_SECONDS", "nan", "finite number of seconds"),
    ("BODY_TIMEOUT_SECONDS", "0", "finite number of seconds > 0"),
    ("MAX_INSTANCES", "1.5", "an integer"),
    ("MAX_BODY_BYTES", "0", "bytes >= 1"),
    ("LOG_REQUESTS", "maybe", "true or false"),
    ("LOG_FORMAT", "xml", "json or text"),
    ("MODEL_STORE", "", "gs://bucket/prefix or a local folder"),
])
def test_bad_values_name_the_setting_and_what_was_expected(name, value, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value})

    assert info.value.field == name
    assert expected in str(info.value)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="MODEL_STOR"):
        load_settings(environ={}, overrides={"MODEL_STOR": "/tmp/x"})
