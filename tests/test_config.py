"""Config: precedence (options > environment > defaults), validation, identity, redaction."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from tinkex_actors import _constants as c
from tinkex_actors._config_options import declared, markdown_table
from tinkex_actors.config import Config
from tinkex_actors.errors import ConfigError

KEY = "tml-config-test-key-abcdef"
SECRET = "cf-secret-value-123"


def test_defaults() -> None:
    config = Config(api_key=KEY)
    assert config.base_url == c.DEFAULT_BASE_URL
    assert (config.timeout, config.connect_timeout, config.max_retries) == (60.0, 5.0, 10)
    assert config.tags == ()
    assert config.project_id is None
    assert config.telemetry_enabled is True
    assert config.verify_tls is True
    assert config.ca_bundle is None
    assert config.proxy is None
    assert (config.max_chunk_datums, config.max_chunk_tokens) == (128, 500_000)
    assert (config.sample_max_inflight, config.sample_max_inflight_throttled) == (2000, 10)
    assert (config.sample_max_queued, config.sample_queue_full) == (None, "raise")
    assert (config.sample_dispatch_threads, config.poll_threads) == (16, 256)
    assert (config.http_pool_block, config.max_response_bytes) == (False, 2**30)
    assert (config.heartbeat_interval, config.poll_timeout) == (10.0, 45.0)
    assert dict(config.default_headers) == {}
    assert dict(config.user_metadata) == {}


def test_plain_construction_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_BASE_URL", "http://from-env.test")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    config = Config(api_key=KEY)
    assert config.base_url == c.DEFAULT_BASE_URL
    assert config.telemetry_enabled is True


def test_environment_fills_what_options_leave_out() -> None:
    env = {
        "TINKER_API_KEY": "tml-from-env",
        "TINKER_BASE_URL": "http://env.test:9000/prefix/",
        "TINKER_TAGS": "a, b,,a , c",
        "TINKER_PROJECT_ID": "proj-1",
        "TINKER_TELEMETRY": "off",
        "CLOUDFLARE_ACCESS_CLIENT_ID": "cf-id",
        "CLOUDFLARE_ACCESS_CLIENT_SECRET": SECRET,
    }
    config = Config.new(env=env)
    assert config.api_key == "tml-from-env"
    assert config.base_url == "http://env.test:9000/prefix"
    assert config.tags == ("a", "b", "c")
    assert config.project_id == "proj-1"
    assert config.telemetry_enabled is False
    assert (config.cf_access_client_id, config.cf_access_client_secret) == ("cf-id", SECRET)


def test_options_beat_the_environment() -> None:
    env = {
        "TINKER_API_KEY": "tml-from-env",
        "TINKER_BASE_URL": "http://env.test",
        "TINKER_TAGS": "env-tag",
        "TINKER_PROJECT_ID": "env-proj",
        "TINKER_TELEMETRY": "0",
    }
    config = Config.new(
        api_key=KEY,
        base_url="https://opt.test",
        tags=["opt"],
        project_id="opt-proj",
        telemetry_enabled=True,
        timeout=3,
        env=env,
    )
    assert config.api_key == KEY
    assert config.base_url == "https://opt.test"
    assert config.tags == ("opt",)
    assert config.project_id == "opt-proj"
    assert config.telemetry_enabled is True
    assert config.timeout == 3.0


def test_new_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    monkeypatch.setenv("TINKER_BASE_URL", "")  # empty means unset
    config = Config.new()
    assert config.api_key == KEY
    assert config.base_url == c.DEFAULT_BASE_URL


@pytest.mark.parametrize("raw", ["1", "true", "YES", "on", " On "])
def test_telemetry_truthy_values(raw: str) -> None:
    assert Config.new(api_key=KEY, env={"TINKER_TELEMETRY": raw}).telemetry_enabled is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "OFF"])
def test_telemetry_falsy_values(raw: str) -> None:
    assert Config.new(api_key=KEY, env={"TINKER_TELEMETRY": raw}).telemetry_enabled is False


def test_bad_telemetry_env_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        Config.new(api_key=KEY, env={"TINKER_TELEMETRY": "ture"})
    assert info.value.field == "telemetry_enabled"
    assert "TINKER_TELEMETRY" in str(info.value)


def test_missing_key_is_an_error_at_construction() -> None:
    with pytest.raises(ConfigError) as info:
        Config.new(env={})
    assert info.value.field == "api_key"
    assert "TINKER_API_KEY" in str(info.value)


def test_base_url_normalization() -> None:
    assert Config(api_key=KEY, base_url="").base_url == c.DEFAULT_BASE_URL
    assert Config(api_key=KEY, base_url="http://h:1/a/b//").base_url == "http://h:1/a/b"
    assert Config(api_key=KEY, base_url="https://h").base_url == "https://h"


def test_jwt_keys_are_accepted() -> None:
    assert Config(api_key="eyJhbGciOiJIUzI1NiJ9.e30.sig").api_key.startswith("eyJ")


BAD_VALUES: list[tuple[str, Any]] = [
    ("api_key", "sk-not-tinker"),
    ("api_key", 123),
    ("api_key", "tml-"),
    ("api_key", "tml-has space"),
    ("credential_cmd", ""),
    ("credential_cmd", 5),
    ("credential_cmd", "print\x00key"),
    ("base_url", "ftp://h"),
    ("base_url", "http://"),
    ("base_url", "http://h?x=1"),
    ("base_url", "http://user:pw@h"),
    ("base_url", "http://h:notaport"),
    ("base_url", 5),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", float("inf")),
    ("timeout", "60"),
    ("timeout", True),
    ("connect_timeout", 0),
    ("max_retries", -1),
    ("max_retries", 1.5),
    ("max_retries", True),
    ("tags", [""]),
    ("tags", [1]),
    ("tags", 7),
    ("project_id", ""),
    ("project_id", 3),
    ("telemetry_enabled", "yes"),
    ("cf_access_client_id", "bad\nvalue"),
    ("default_headers", {"X-API-Key": "tml-other"}),
    ("default_headers", {"Content-Type": "text/plain"}),
    ("default_headers", {"bad name": "v"}),
    ("default_headers", {"X-A": "line\r\nbreak"}),
    ("default_headers", {"X-A": 1}),
    ("default_headers", ["X-A"]),
    ("user_metadata", {"k": 1}),
    ("verify_tls", 0),
    ("ca_bundle", "/no/such/bundle.pem"),
    ("ca_bundle", 12),
    ("proxy", "socks5://h:1"),
    ("proxy", "not a url"),
    ("http_pool_size", 0),
    ("http_pool_block", "yes"),
    ("max_response_bytes", 0),
    ("max_chunk_datums", 0),
    ("max_chunk_tokens", -5),
    ("sample_max_inflight", 0),
    ("sample_max_inflight_throttled", 0),
    ("sample_max_queued", 0),
    ("sample_queue_full", "block"),
    ("sample_dispatch_threads", 0),
    ("poll_threads", -1),
    ("heartbeat_interval", 0),
    ("poll_timeout", -1),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_every_bad_value_names_its_field(field: str, value: Any) -> None:
    options: dict[str, Any] = {"api_key": KEY, field: value}
    with pytest.raises(ConfigError) as info:
        Config(**options)
    assert info.value.field == field
    assert f"Config.{field}" in str(info.value)


def test_cloudflare_options_come_in_pairs() -> None:
    with pytest.raises(ConfigError) as info:
        Config(api_key=KEY, cf_access_client_secret=SECRET)
    assert info.value.field == "cf_access_client_id"
    with pytest.raises(ConfigError) as info:
        Config(api_key=KEY, cf_access_client_id="only-the-id")
    assert info.value.field == "cf_access_client_secret"


def test_ca_bundle_with_verification_off_is_contradictory(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert Config(api_key=KEY, ca_bundle=bundle).ca_bundle == str(bundle)
    with pytest.raises(ConfigError) as info:
        Config(api_key=KEY, ca_bundle=str(bundle), verify_tls=False)
    assert info.value.field == "ca_bundle"


def test_every_field_is_covered_by_a_bad_value() -> None:
    fields = {a.name for a in attrs.fields(Config) if a.init}
    covered = {name for name, _ in BAD_VALUES} | {"cf_access_client_secret"}
    assert fields == covered


def test_frozen_hashable_and_equal_by_value() -> None:
    a = Config(api_key=KEY, tags=["x"], default_headers={"X-A": "1"})
    b = Config(api_key=KEY, tags=("x",), default_headers={"X-A": "1"})
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a != a.with_(timeout=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.timeout = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.default_headers["X-B"] = "2"  # type: ignore[index]


def test_with_validates_and_rejects_unknown_options() -> None:
    config = Config(api_key=KEY)
    faster = config.with_(max_retries=2, base_url="http://h/")
    assert (faster.max_retries, faster.base_url) == (2, "http://h")
    assert config.evolve(timeout=2).timeout == 2.0
    with pytest.raises(ConfigError) as info:
        config.with_(timeout=-1)
    assert info.value.field == "timeout"
    with pytest.raises(ConfigError) as info:
        config.with_(retries=3)
    assert info.value.field == "retries"


def test_tenant_identity() -> None:
    a = Config(api_key=KEY, base_url="http://h")
    assert a.tenant_key == a.with_(timeout=1).tenant_key
    assert a.tenant_id == a.with_(timeout=1).tenant_id
    assert a.tenant_key != a.with_(api_key="tml-other-key").tenant_key
    assert a.tenant_id != a.with_(base_url="http://other").tenant_id
    assert KEY not in repr(a.tenant_key)
    assert KEY not in a.tenant_id


def test_repr_masks_secrets() -> None:
    config = Config(
        api_key=KEY,
        cf_access_client_id="cf-id",
        cf_access_client_secret=SECRET,
        default_headers={"X-Proxy-Token": "hdr-secret"},
        proxy="http://puser:ppass@proxy.test:3128",
    )
    text = repr(config)
    for secret in (KEY, SECRET, "hdr-secret", "ppass", "puser"):
        assert secret not in text
    assert "api_key='tml-***'" in text
    assert "X-Proxy-Token" in text
    assert "cf-id" in text
    assert str(config) == text


# ------------------------------------------------------------------ one declaration per option
def _declared_names() -> list[str]:
    return [field.name for field, _ in declared(Config)]


def test_new_takes_every_declared_option_as_a_keyword() -> None:
    parameters = inspect.signature(Config.new).parameters
    assert list(parameters) == [*_declared_names(), "env"]
    for name in _declared_names():
        parameter = parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default is None, name  # None means "not given"
        assert str(parameter.annotation).endswith("| None"), name


def test_declarations_are_the_init_options() -> None:
    assert _declared_names() == [a.name for a in attrs.fields(Config) if a.init]
    assert {"api_key", "credential_cmd", "cf_access_client_secret"} == Config.SECRET_FIELDS


def test_docs_option_table_is_generated_from_the_declarations() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    table = markdown_table(Config)
    assert table in text, "run: python docs/gen_api.py"
    for name in _declared_names():
        assert f"| `{name}` |" in table


def test_docstring_documents_every_option() -> None:
    doc = Config.__doc__ or ""
    assert "Prefer :meth:`Config.new`" in doc
    attributes = doc[doc.index("Attributes:") :]
    for name in _declared_names():
        assert f"\n    {name}: " in attributes, name


def test_each_environment_variable_is_read_only_by_new() -> None:
    variables = {spec.env for _, spec in declared(Config) if spec.env is not None}
    assert variables == {
        c.ENV_API_KEY,
        c.ENV_CREDENTIAL_CMD,
        c.ENV_BASE_URL,
        c.ENV_TAGS,
        c.ENV_PROJECT_ID,
        c.ENV_TELEMETRY,
        c.ENV_CF_CLIENT_ID,
        c.ENV_CF_CLIENT_SECRET,
    }


def test_an_explicit_empty_base_url_falls_back_to_the_environment() -> None:
    env = {"TINKER_BASE_URL": "http://env.test"}
    assert Config.new(api_key=KEY, base_url="", env=env).base_url == "http://env.test"
    assert Config.new(api_key=KEY, base_url="", env={}).base_url == c.DEFAULT_BASE_URL


def test_numpy_integers_are_stored_as_ints() -> None:
    config = Config(api_key=KEY, max_retries=np.int64(3), sample_max_queued=np.int32(5))
    assert (config.max_retries, config.sample_max_queued) == (3, 5)
    assert type(config.max_retries) is int
    assert type(config.sample_max_queued) is int


def test_a_bad_metadata_value_names_the_option_and_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Config(api_key=KEY, user_metadata={"team": "a", "k": 1})
    assert info.value.field == "user_metadata"
    assert "user_metadata.k" in str(info.value)
