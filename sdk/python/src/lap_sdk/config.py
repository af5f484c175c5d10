"""Client settings, resolved as the `lap` CLI resolves them (src/settings.rs).

Sources, strongest first: the arguments given to the client, the environment (`LAP_URL`,
`LAP_MASTER_KEY`), the CLI's config file (`config.toml` in its config dir: `url`, `ca_cert`,
`key_store`), the master key's store, the default URL `http://127.0.0.1:3000`.

The CLI's config dir is `$XDG_CONFIG_HOME/lap` (`~/.config/lap`) on Linux,
`~/Library/Application Support/dev.lap.lap` on macOS and `%APPDATA%\\lap\\lap\\config` on Windows.
The key is read from the `credentials` file there (TOML: `master_key = "…"`), which is where `lap
login` keeps it when no OS keyring is reachable or `LAP_CREDENTIAL_STORE=file` asks. A key the CLI
put in the OS keyring (`key_store = "keyring"`) is not read by this SDK: set `LAP_MASTER_KEY`, or
log in again with `LAP_CREDENTIAL_STORE=file lap login`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["DEFAULT_URL", "Settings", "config_dir", "resolve"]

DEFAULT_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Settings:
    """The effective settings: where the server is, the master key, extra CA roots."""

    url: str
    master_key: str | None
    ca_cert: Path | None = None
    # Where each came from (`argument`, `env LAP_URL`, a file's path, `default`), for messages.
    url_source: str = "default"
    key_source: str | None = None

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.master_key else "none"
        return f"Settings(url={self.url!r}, master_key=<{key}>, ca_cert={self.ca_cert!r})"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The `lap` CLI's config dir on this platform (the `directories` crate's rules)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "dev.lap.lap"
    if sys.platform == "win32":
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "lap" / "lap" / "config"
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "lap"


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            f"cannot read `{path}`: {err}",
            hint="fix or delete the file; `lap config` shows the effective settings",
        ) from err


def resolve(
    url: str | None = None,
    master_key: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_dir_path: Path | None = None,
) -> Settings:
    """Merges arguments, environment, the CLI's config file and its credentials file."""
    env = os.environ if env is None else env
    directory = config_dir_path or config_dir(env)
    config_file = directory / "config.toml"
    config = _read_toml(config_file)

    if url:
        resolved_url, url_source = url, "argument"
    elif env.get("LAP_URL"):
        resolved_url, url_source = env["LAP_URL"], "env LAP_URL"
    elif isinstance(config.get("url"), str):
        resolved_url, url_source = str(config["url"]), str(config_file)
    else:
        resolved_url, url_source = DEFAULT_URL, "default"
    resolved_url = resolved_url.rstrip("/")

    key: str | None
    key_source: str | None
    if master_key:
        key, key_source = master_key, "argument"
    elif env.get("LAP_MASTER_KEY"):
        key, key_source = env["LAP_MASTER_KEY"], "env LAP_MASTER_KEY"
    elif config.get("key_store") == "keyring":
        raise ConfigError(
            f"`{config_file}` says the master key is in the OS keyring, which this SDK does not read",
            hint="set `LAP_MASTER_KEY`, pass `master_key=`, or log in with `LAP_CREDENTIAL_STORE=file lap login`",
        )
    else:
        credentials = directory / "credentials"
        stored = _read_toml(credentials).get("master_key")
        key, key_source = (str(stored), str(credentials)) if stored else (None, None)

    ca = config.get("ca_cert")
    return Settings(
        url=resolved_url,
        master_key=key,
        ca_cert=Path(str(ca)) if ca else None,
        url_source=url_source,
        key_source=key_source,
    )
