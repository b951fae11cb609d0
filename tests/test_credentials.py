"""Credential sources: Config.new's order, the stored key file, the credential command, JWTs.

The stored key file is written with the official SDK's own ``JsonCredentialStore`` (the format
oracle). Credential commands are real shell commands run by the real runner; every failure is a
ConfigError that names the source and never the output.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

import pytest
from tinker.lib.credentials import (
    ApiKeyDetails,
    ApiKeyOrgDetails,
    ApiKeyUserDetails,
    GeneratedKey,
    JsonCredentialStore,
    ManualKey,
)

from tinkex_actors import _constants as c
from tinkex_actors._credentials import (
    Origin,
    default_credentials_path,
    is_jwt,
    jwt_times,
    read_stored_key,
    run_credential_cmd,
)
from tinkex_actors.config import Config
from tinkex_actors.errors import ConfigError
from tinkex_actors.transport._auth import Auth

ARG_KEY = "tml-arg-" + secrets.token_hex(8)
ENV_KEY = "tml-env-" + secrets.token_hex(8)
FILE_KEY = "tml-file-" + secrets.token_hex(8)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def make_jwt(exp: float, iat: float | None = None) -> str:
    """An (unsigned-looking) compact JWT with the given claims; only the claims matter here."""
    claims: dict[str, object] = {"exp": exp, "sub": "tenant"}
    if iat is not None:
        claims["iat"] = iat
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"


def store_key(home: Path, key: str, *, default: bool = True) -> Path:
    """Write ``key`` into ``home``'s credentials file the way `tinker auth login` does."""
    path = home / ".tinker" / "credentials.json"
    store = JsonCredentialStore(path)
    store.add_key("work", ManualKey(key=key, name="work"))
    if default:
        store.set_default("work")
    return path


def printing(tmp_path: Path, text: str, name: str = "cmd.sh") -> str:
    """A command that prints ``text`` (read from a file, so the command line holds no key)."""
    source = tmp_path / f"{name}.out"
    source.write_text(text)
    return f"cat {source}"


# ---------------------------------------------------------------------------- Config.new order
def test_resolution_order_is_argument_env_command_stored_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = store_key(home, FILE_KEY)
    command = printing(tmp_path, ENV_KEY)
    env = {"HOME": str(home), "TINKER_API_KEY": ENV_KEY, "TINKER_CREDENTIAL_CMD": command}

    first = Config.new(api_key=ARG_KEY, env=env)
    assert first.api_key == ARG_KEY
    assert first.api_key_origin == Origin("given", "api_key")
    assert first.credential_cmd == command  # kept: a server may ask for it

    second = Config.new(env=env)
    assert second.api_key == ENV_KEY
    assert second.api_key_origin == Origin("given", "TINKER_API_KEY")  # an env= mapping
    assert second.credential_source == "TINKER_API_KEY"

    del env["TINKER_API_KEY"]
    third = Config.new(env=env)
    assert third.api_key is None  # the command is a source: not run, not frozen
    assert third.credential_cmd == command
    assert third.credential_source == "credential command (TINKER_CREDENTIAL_CMD)"

    del env["TINKER_CREDENTIAL_CMD"]
    fourth = Config.new(env=env)
    assert fourth.api_key == FILE_KEY
    assert fourth.api_key_origin == Origin("file", str(path))
    assert str(path) in fourth.credential_source

    explicit = Config.new(credential_cmd="printf x", env=env)
    assert explicit.api_key is None  # a command given as an argument shadows the stored file
    assert explicit.credential_cmd_origin == Origin("given", "credential_cmd")


def test_process_environment_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    assert default_credentials_path() == tmp_path / ".tinker" / "credentials.json"
    store_key(tmp_path, FILE_KEY)
    assert Config.new().api_key == FILE_KEY
    monkeypatch.setenv("TINKER_API_KEY", ENV_KEY)
    config = Config.new()
    assert config.api_key == ENV_KEY
    assert config.api_key_origin == Origin("env", "TINKER_API_KEY")


def test_stored_file_without_a_default_key_is_no_credential(tmp_path: Path) -> None:
    store_key(tmp_path, FILE_KEY, default=False)
    with pytest.raises(ConfigError) as info:
        Config.new(env={"HOME": str(tmp_path)})
    assert info.value.field == "api_key"
    assert "TINKER_CREDENTIAL_CMD" in str(info.value)
    with pytest.raises(ConfigError):
        Config.new(env={})  # no HOME in the mapping: the stored file is not looked for


def test_generated_keys_of_older_clis_are_read(tmp_path: Path) -> None:
    path = tmp_path / ".tinker" / "credentials.json"
    store = JsonCredentialStore(path)
    details = ApiKeyDetails(
        org_details=ApiKeyOrgDetails(name="org"), user_details=ApiKeyUserDetails(email="a@b.c")
    )
    store.add_key("cli", GeneratedKey(key=FILE_KEY, name="cli", details=details))
    store.set_default("cli")
    assert read_stored_key(path) == FILE_KEY


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"version": 2, "keys": {}}', "version 2"),
        ('{"default": "k", "keys": {"k": {"type": "manual"}}}', "no 'key' string"),
        ('{"default": "k", "keys": {"k": {"key": "sk-SECRETVALUE"}}}', "must start with"),
    ],
)
def test_malformed_stored_file_names_the_file_not_its_content(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / ".tinker" / "credentials.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Config.new(env={"HOME": str(tmp_path)})
    assert info.value.field == "api_key"
    assert str(path) in str(info.value)
    assert says in str(info.value)
    assert "SECRETVALUE" not in str(info.value)


def test_the_command_is_not_run_at_construction(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = Config.new(env={"TINKER_CREDENTIAL_CMD": f"touch {marker}; printf {ARG_KEY}"})
    assert config.credential_cmd is not None
    assert not marker.exists()
    assert run_credential_cmd(config.credential_cmd, origin="test") == ARG_KEY
    assert marker.exists()


def test_repr_and_identity_never_show_the_command_or_key(tmp_path: Path) -> None:
    command = f"vault read -field=key secret/{secrets.token_hex(6)}"
    config = Config(credential_cmd=command, base_url="http://h")
    text = repr(config)
    assert "credential_cmd='***'" in text
    assert "api_key=None" in text
    assert command not in text
    assert command not in config.tenant_id
    assert command not in repr(config.tenant_key)
    other = Config(credential_cmd=command + " ", base_url="http://h")
    assert config.tenant_id != other.tenant_id  # a different source is a different tenant
    keyed = Config(api_key=ARG_KEY, credential_cmd=command, base_url="http://h")
    assert keyed.tenant_key == Config(api_key=ARG_KEY, base_url="http://h").tenant_key


def test_with_keeps_where_unchanged_credentials_came_from() -> None:
    config = Config.new(env={"TINKER_API_KEY": ENV_KEY, "TINKER_CREDENTIAL_CMD": "printf x"})
    faster = config.with_(timeout=3)
    assert faster.api_key_origin == config.api_key_origin == Origin("given", "TINKER_API_KEY")
    assert faster.credential_cmd_origin == Origin("given", "TINKER_CREDENTIAL_CMD")
    assert config.with_(api_key=ARG_KEY).api_key_origin == Origin("given", "api_key")


# ---------------------------------------------------------------------------- the command runner
@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("echo SECRETVALUE-abc; exit 3", "failed with exit status 3"),
        ("true", "printed nothing"),
        ("printf '   \\n'", "printed nothing"),
        ("echo hunter2-SECRETVALUE", "printed a credential that must start with"),
        ("printf 'tml-SECRET VALUE'", "visible ASCII"),
        ("/no/such/program-xyz", "exit status 127"),
    ],
)
def test_a_failing_command_is_a_config_error_naming_the_source(command: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_credential_cmd(command, origin="TINKER_CREDENTIAL_CMD")
    text = str(info.value)
    assert info.value.field == "credential_cmd"
    assert "the credential command (from TINKER_CREDENTIAL_CMD)" in text
    assert says in text
    assert "SECRETVALUE" not in text


def test_an_expired_jwt_from_the_command_is_refused(tmp_path: Path) -> None:
    stale = make_jwt(time.time() - 10, time.time() - 100)
    with pytest.raises(ConfigError) as info:
        run_credential_cmd(printing(tmp_path, stale), origin="credential_cmd")
    assert "expired" in str(info.value)
    assert stale not in str(info.value)
    fresh = make_jwt(time.time() + 600, time.time())
    assert run_credential_cmd(printing(tmp_path, fresh + "\n"), origin="x") == fresh


def test_a_command_that_hangs_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {pid_file}; wait"
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_credential_cmd(command, origin="credential_cmd", timeout=0.5)
    assert time.monotonic() - start < 10
    assert "did not finish within 0.5 s" in str(info.value)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command's child process survived the timeout")


def test_output_goes_through_stdout_only(tmp_path: Path) -> None:
    command = f"echo noise-on-stderr >&2; {sys.executable} -c 'print(\"{ARG_KEY}\")'"
    assert run_credential_cmd(command, origin="credential_cmd") == ARG_KEY


# ---------------------------------------------------------------------------- JWT claims
def test_jwt_claims_and_clock_skew() -> None:
    now = time.time()
    token = make_jwt(now + 100, now)
    assert is_jwt(token)
    assert not is_jwt("eyJonly.two")
    times = jwt_times(token)
    assert times is not None
    assert times.lifetime == pytest.approx(100)
    assert times.remaining(now) == pytest.approx(100)
    # A local clock 1 h ahead (token "expired") or behind (token "lives" too long): the
    # token's own lifetime wins.
    assert times.remaining(now + 3600) == pytest.approx(100)
    assert times.remaining(now - 3600) == pytest.approx(100)
    no_iat = jwt_times(make_jwt(now + 50))
    assert no_iat is not None
    assert no_iat.lifetime is None
    assert no_iat.remaining(now) == pytest.approx(50, abs=1)
    assert jwt_times("eyJx.bm90IGpzb24.sig") is None
    assert jwt_times(make_jwt(exp="soon")) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("lifetime", "margin"), [(3600.0, 60.0), (2.0, 1.0), (100.0, 50.0)])
def test_command_jwts_are_renewed_before_they_expire(
    tmp_path: Path, lifetime: float, margin: float
) -> None:
    # The renewal deadline: min(60 s, half the lifetime) before exp (observed through Auth in
    # command mode, whose credential is the command's JWT).
    now = time.time()
    config = Config(credential_cmd=printing(tmp_path, make_jwt(now + lifetime, now)))
    auth = Auth(config)
    assert auth.mode == "command"
    assert auth.dynamic
    start = time.monotonic()
    auth.token()
    current = auth._current
    assert current.expires_at - start == pytest.approx(lifetime, abs=1.0)
    assert current.expires_at - current.refresh_at == pytest.approx(margin, abs=0.01)
    assert auth.renewals == 1
    auth.token()  # not due yet: no second run
    assert auth.renewals == 1


def test_static_keys_never_need_the_auth_path() -> None:
    auth = Auth(Config(api_key=ARG_KEY))
    assert auth.mode == "static"
    assert not auth.dynamic
    assert auth.token() == ARG_KEY
    assert math.isinf(auth._current.refresh_at)
    assert not auth.should_renew(401, {"www-authenticate": c.JWT_INVALID_TOKEN})
