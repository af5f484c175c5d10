"""Settings resolve as the CLI's do: arguments, then LAP_URL/LAP_MASTER_KEY, then the CLI's config
and credentials files (the real ones `lap serve` wrote on its first start, in the test's HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lap_sdk import Client, ConfigError, config_dir, resolve

WITHOUT_ENV = {k: v for k, v in os.environ.items() if k not in ("LAP_URL", "LAP_MASTER_KEY")}


def test_the_clis_config_file_alone_reaches_the_server() -> None:
    settings = resolve(env=WITHOUT_ENV)
    assert settings.url == os.environ["LAP_URL"]
    assert settings.master_key == os.environ["LAP_MASTER_KEY"]
    assert settings.url_source == str(config_dir(WITHOUT_ENV) / "config.toml")
    assert settings.key_source == str(config_dir(WITHOUT_ENV) / "credentials")
    with Client(settings=settings) as lap:
        assert isinstance(lap.sessions.list(), list)


def test_the_environment_beats_the_config_file_and_arguments_beat_both() -> None:
    env = dict(WITHOUT_ENV, LAP_URL="http://127.0.0.1:1/", LAP_MASTER_KEY="from-env")
    settings = resolve(env=env)
    assert (settings.url, settings.master_key, settings.url_source) == ("http://127.0.0.1:1", "from-env", "env LAP_URL")
    settings = resolve("http://127.0.0.1:2", "from-arg", env=env)
    assert (settings.url, settings.master_key) == ("http://127.0.0.1:2", "from-arg")
    assert "from-arg" not in repr(settings)


def test_xdg_config_home_places_the_config_dir(tmp_path: Path) -> None:
    assert config_dir({"HOME": str(tmp_path)}) == tmp_path / ".config" / "lap"
    assert config_dir({"HOME": "/nowhere", "XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "lap"


def test_nothing_configured_means_the_default_url_and_no_key(tmp_path: Path) -> None:
    settings = resolve(env={"HOME": str(tmp_path)})
    assert (settings.url, settings.master_key, settings.url_source) == ("http://127.0.0.1:3000", None, "default")


def test_a_key_in_the_os_keyring_is_refused_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('url = "http://127.0.0.1:3000"\nkey_store = "keyring"\n')
    with pytest.raises(ConfigError) as err:
        resolve(env={}, config_dir_path=tmp_path)
    assert "LAP_MASTER_KEY" in err.value.hint
    # LAP_MASTER_KEY is enough then.
    assert resolve(env={"LAP_MASTER_KEY": "k"}, config_dir_path=tmp_path).master_key == "k"


def test_a_broken_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("url = \n")
    with pytest.raises(ConfigError) as err:
        resolve(env={}, config_dir_path=tmp_path)
    assert str(tmp_path / "config.toml") in err.value.message and err.value.hint
