"""`[web]`: defaults, every bad value named by its key path, and `syncd check` judging it."""

from __future__ import annotations

import os
from pathlib import Path
from textwrap import dedent

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.config.load import loads_config
from syncd.config.model import ConfigError, WebSettings

SOURCE = '[defaults]\ncommand_prefix = ["sh"]\n[sources.crm.routes]\nall = "x"\n'


def load(web: str, base: Path = Path("/cfgdir")) -> WebSettings:
    text = SOURCE + "[web]\n" + dedent(web)
    return loads_config(text, base_dir=base, env={"PATH": os.environ["PATH"]}).web


def errors(web: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(web)
    return [str(p) for p in info.value.errors]


def test_defaults() -> None:
    web = loads_config(SOURCE, base_dir=Path("/x"), env={"PATH": os.environ["PATH"]}).web
    assert (web.host, web.port, web.listen) == ("127.0.0.1", 8790, "127.0.0.1:8790")
    assert web.actions is False and web.token_file is None and web.trust_proxy is False
    assert web.base_path == "/"
    assert set(web.allowed_hosts) == {"127.0.0.1", "localhost", "[::1]"}


def test_values_and_derived_defaults(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    web = load(
        """
        listen = "0.0.0.0:9000"
        actions = true
        token_file = "token"
        base_path = "/syncd/"
        trust_proxy = true
        """,
        tmp_path,
    )
    assert (web.host, web.port) == ("0.0.0.0", 9000)
    assert web.token_file == tmp_path / "token"
    assert web.base_path == "/syncd"
    assert web.allowed_hosts == ("0.0.0.0", "localhost", "127.0.0.1", "[::1]")
    v6 = load('listen = "[::1]:8080"\nallowed_hosts = ["Dash.Example.com"]')
    assert (v6.host, v6.port, v6.listen) == ("::1", 8080, "[::1]:8080")
    assert v6.allowed_hosts == ("dash.example.com",)


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ("actions = true", "web.token_file: required when web.actions = true"),
        ('listen = "localhost"', "web.listen: expected HOST:PORT (port 1-65535), got 'localhost'"),
        ('listen = "x:70000"', "web.listen: expected HOST:PORT"),
        ("listen = 8790", "web.listen: expected a string, got 8790 (integer)"),
        ('actions = "yes"', "web.actions: expected true or false"),
        ("allowed_hosts = []", "web.allowed_hosts: must not be empty"),
        ('allowed_hosts = ["ok", 3]', "web.allowed_hosts[1]: expected a non-empty string"),
        ('base_path = "syncd"', "web.base_path: expected an absolute URL path"),
        ('base_path = "/a b"', "web.base_path: expected an absolute URL path"),
        # The old pattern took about 2^n steps to refuse these: `syncd check` hung.
        ('base_path = "/operations-dashboard-for-syncd-prod-eu?"', "web.base_path: expected an"),
        (f'base_path = "/{"a" * 5000} "', "web.base_path: expected an absolute URL path"),
        ("trust_proxi = true", "web.trust_proxi: unknown key; did you mean 'trust_proxy'?"),
        ('token_file = ""', "web.token_file: must not be empty"),
    ],
)
def test_each_bad_value_names_its_key(web: str, message: str) -> None:
    found = errors(web)
    assert len(found) == 1 and found[0].startswith(message), found


def test_check_reports_web_errors_and_token_warnings(tmp_path: Path) -> None:
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(SOURCE + '[web]\nactions = true\nlisten = "nope"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "web.token_file: required when web.actions = true" in result.output
    assert "web.listen: expected HOST:PORT" in result.output
    cfg.write_text(SOURCE + '[web]\nactions = true\ntoken_file = "missing"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert f"warning: web.token_file: {tmp_path / 'missing'} does not exist" in result.output
    strict = CliRunner().invoke(main, ["check", "--strict", "--config", str(cfg)])
    assert strict.exit_code == 1
