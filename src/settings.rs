//! Client settings: where the server is and how to authenticate, resolved once.
//!
//! Sources, strongest first: flags (`--server`), environment (`LAP_URL`, `LAP_MASTER_KEY`), the
//! config file (`config.toml` in the XDG config dir), the master key's store, built-in defaults.
//! [`Env`] is the only place that reads the process environment (for `lap serve` too: the
//! variables that are not a flag's clap `env =`, such as the [`ToolDeadlines`]); everything below
//! takes plain values. The master key lives in the OS keyring (Secret Service over D-Bus) when a
//! session bus is there, else in a `credentials` file created with mode 0600 from its first byte.
//! The config file records which store holds the key, so reading never guesses.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Where the server listens by default, and so where the client looks by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:3000";
const KEYRING_SERVICE: &str = "lap";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("the OS keyring failed: {0}")]
    Keyring(String),
    #[error("no home directory: cannot find the config dir")]
    NoHome,
    #[error("`LAP_CREDENTIAL_STORE` must be `auto`, `keyring` or `file`, not `{0}`")]
    BadStoreChoice(String),
}

/// The process environment, read once at the edge.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub lap_url: Option<String>,
    pub master_key: Option<String>,
    pub credential_store: Option<String>,
    /// `LAP_TTY_TOKEN`: the terminal token for a session whose server gave none.
    pub tty_token: Option<String>,
    /// `LAP_TTY_FALLBACK`: the terminal URL for a session whose sandbox is in-cluster.
    pub tty_fallback: Option<String>,
    pub no_color: bool,
    pub session_bus: bool,
    /// `LAP_TOOL_START_TIMEOUT` (`lap serve`), as given: [`ToolDeadlines::from_env`] checks it.
    pub tool_start_timeout: Option<String>,
    /// `LAP_TOOL_SILENCE_TIMEOUT` (`lap serve`), as given.
    pub tool_silence_timeout: Option<String>,
    /// `LAP_OIDC_CLIENT_SECRET` (`lap serve --oidc-issuer`): never a flag, so never in `ps`.
    pub oidc_client_secret: Option<String>,
}

impl Env {
    pub fn capture() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            lap_url: var("LAP_URL"),
            master_key: var("LAP_MASTER_KEY"),
            credential_store: var("LAP_CREDENTIAL_STORE"),
            tty_token: var("LAP_TTY_TOKEN"),
            tty_fallback: var("LAP_TTY_FALLBACK"),
            no_color: var("NO_COLOR").is_some(),
            session_bus: crate::platform::keyring_expected(var("DBUS_SESSION_BUS_ADDRESS").is_some()),
            tool_start_timeout: var("LAP_TOOL_START_TIMEOUT"),
            tool_silence_timeout: var("LAP_TOOL_SILENCE_TIMEOUT"),
            oidc_client_secret: var("LAP_OIDC_CLIENT_SECRET"),
        }
    }
}

/// The deadlines `lap serve` holds an API harness's tool to (`control/messages.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolDeadlines {
    /// How long a tool has, once started, to name its conversation (its handshake, its server
    /// coming up, a resume): `LAP_TOOL_START_TIMEOUT` (seconds).
    pub start: Duration,
    /// How long a turn may go without a line from its tool before the tool is stopped:
    /// `LAP_TOOL_SILENCE_TIMEOUT` (seconds).
    pub silence: Duration,
}

impl ToolDeadlines {
    /// 180 s to start (beyond opencode's own 120 s readiness guard) and 30 minutes of silence.
    pub const DEFAULT: Self = Self {
        start: Duration::from_secs(180),
        silence: Duration::from_secs(30 * 60),
    };
}

impl ToolDeadlines {
    /// The deadlines `env` gives, each a whole number of seconds above 0, or its default when unset.
    /// Anything else is refused, naming the variable: a typo must not leave a tool 30 minutes to hang.
    pub fn from_env(env: &Env) -> Result<Self, String> {
        Ok(Self {
            start: seconds(
                "LAP_TOOL_START_TIMEOUT",
                env.tool_start_timeout.as_deref(),
                Self::DEFAULT.start,
            )?,
            silence: seconds(
                "LAP_TOOL_SILENCE_TIMEOUT",
                env.tool_silence_timeout.as_deref(),
                Self::DEFAULT.silence,
            )?,
        })
    }
}

impl Default for ToolDeadlines {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Variable `name`'s `value`: whole seconds, more than 0; `default` when unset.
fn seconds(name: &str, value: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("`{name}` is `{value}`, not a whole number of seconds above 0")),
    }
}

/// Who reads an environment variable of [`ENVIRONMENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvScope {
    /// Every client command (`lap <agent>`, `lap agents …`, …).
    Client,
    /// `lap serve`.
    Server,
    /// A sandbox, from an agent's `--env`.
    Agent,
}

/// An environment variable lap reads that is not a flag's clap `env =`; those are documented with
/// their flags. `lap reference configuration` renders this list into
/// `docs/reference/configuration.md`, so a variable read here belongs in it.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    pub scope: EnvScope,
    /// The flag that does the same, if any.
    pub flag: Option<&'static str>,
    /// What it sets (Markdown).
    pub meaning: &'static str,
    /// What applies when it is not set (Markdown).
    pub default: &'static str,
}

/// Every environment variable lap reads outside clap's `env =`.
pub const ENVIRONMENT: &[EnvVar] = &[
    EnvVar {
        name: "LAP_URL",
        scope: EnvScope::Client,
        flag: Some("--server"),
        meaning: "Server URL",
        default: "`url` in the config file, else `http://127.0.0.1:3000`",
    },
    EnvVar {
        name: "LAP_MASTER_KEY",
        scope: EnvScope::Client,
        flag: None,
        meaning: "Master key",
        default: "the saved key (keyring or credentials file)",
    },
    EnvVar {
        name: "LAP_CREDENTIAL_STORE",
        scope: EnvScope::Client,
        flag: None,
        meaning: "Where the client keeps the key: `auto`, `keyring` or `file`",
        default: "`auto`: the OS keyring (Linux: Secret Service, when a D-Bus session bus is there; macOS: \
                  Keychain; Windows: Credential Manager), else the credentials file",
    },
    EnvVar {
        name: "DBUS_SESSION_BUS_ADDRESS",
        scope: EnvScope::Client,
        flag: None,
        meaning: "Whether a D-Bus session bus is there (Linux), so `auto` tries the Secret Service",
        default: "set by the desktop session; unset: the credentials file",
    },
    EnvVar {
        name: "LAP_TTY_TOKEN",
        scope: EnvScope::Client,
        flag: None,
        meaning: "Terminal token for a session whose server returned none (LAP's)",
        default: "the session's `tty_token`",
    },
    EnvVar {
        name: "LAP_TTY_FALLBACK",
        scope: EnvScope::Client,
        flag: None,
        meaning: "Terminal URL (`ws://host:port/tty`) for a session whose sandbox is in-cluster and that has \
                  no `tty_url` (LAP's)",
        default: "none: such a session fails with `session is in-cluster … — no LAP_TTY_FALLBACK set`",
    },
    EnvVar {
        name: "NO_COLOR",
        scope: EnvScope::Client,
        flag: Some("--no-color"),
        meaning: "No colour (any value)",
        default: "colour only on a terminal",
    },
    EnvVar {
        name: "RUST_LOG",
        scope: EnvScope::Client,
        flag: Some("--verbose"),
        meaning: "Logging: a tracing filter, for full control",
        default: "warnings (`lap serve`: info)",
    },
    EnvVar {
        name: "LAP_MASTER_KEY",
        scope: EnvScope::Server,
        flag: None,
        meaning: "The server's master key (at least 8 characters)",
        default: "generated on first start, kept in `<data dir>/master.key`",
    },
    EnvVar {
        name: "LAP_TOOL_START_TIMEOUT",
        scope: EnvScope::Server,
        flag: None,
        meaning: "How long an API harness's tool has to start its conversation (handshake, readiness, \
                  resume), in seconds",
        default: "`180`",
    },
    EnvVar {
        name: "LAP_TOOL_SILENCE_TIMEOUT",
        scope: EnvScope::Server,
        flag: None,
        meaning: "How long a turn may go without a line from its tool, in seconds",
        default: "`1800`",
    },
    EnvVar {
        name: "LAP_OIDC_CLIENT_SECRET",
        scope: EnvScope::Server,
        flag: None,
        meaning: "OIDC sign-in: the client secret the provider gave this server (required with --oidc-issuer)",
        default: "none",
    },
    EnvVar {
        name: "LAP_OPENCODE_READY_TIMEOUT",
        scope: EnvScope::Agent,
        flag: None,
        meaning: "How long `opencode serve` has to answer, in seconds",
        default: "`120`",
    },
];

/// Where a value came from, for `lap config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Source {
    Flag,
    Env(String),
    ConfigFile(PathBuf),
    Keyring,
    CredentialsFile(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("flag"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::ConfigFile(path) => write!(f, "{}", path.display()),
            Self::Keyring => f.write_str("OS keyring"),
            Self::CredentialsFile(path) => write!(f, "{}", path.display()),
            Self::Default => f.write_str("default"),
        }
    }
}

/// Which store keeps the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStore {
    Keyring,
    File,
}

/// The config file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A PEM file of extra roots for a server with its own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store: Option<KeyStore>,
}

/// Paths of the client's files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_dir: PathBuf,
}

impl Paths {
    /// The XDG config dir (`~/.config/lap` on Linux).
    pub fn discover() -> Result<Self, SettingsError> {
        let dirs = directories::ProjectDirs::from("dev", "lap", "lap").ok_or(SettingsError::NoHome)?;
        Ok(Self {
            config_dir: dirs.config_dir().to_owned(),
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.config_dir.join("credentials")
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The effective client settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub paths: Paths,
    pub url: Sourced<String>,
    pub master_key: Option<Sourced<Secret>>,
    pub ca_cert: Option<Sourced<PathBuf>>,
    pub file: ConfigFile,
    pub env: Env,
}

impl Settings {
    /// Merges flag, environment, config file and key store. `server_flag` is `--server`.
    pub fn resolve(paths: Paths, env: Env, server_flag: Option<String>) -> Result<Self, SettingsError> {
        let config_path = paths.config_file();
        let file = read_config(&config_path)?;
        let url = if let Some(url) = server_flag {
            Sourced {
                value: url,
                source: Source::Flag,
            }
        } else if let Some(url) = env.lap_url.clone() {
            Sourced {
                value: url,
                source: Source::Env("LAP_URL".into()),
            }
        } else if let Some(url) = file.url.clone() {
            Sourced {
                value: url,
                source: Source::ConfigFile(config_path.clone()),
            }
        } else {
            Sourced {
                value: DEFAULT_URL.to_owned(),
                source: Source::Default,
            }
        };
        let url = Sourced {
            value: url.value.trim_end_matches('/').to_owned(),
            source: url.source,
        };
        let master_key = match &env.master_key {
            Some(key) => Some(Sourced {
                value: Secret::new(key.clone()),
                source: Source::Env("LAP_MASTER_KEY".into()),
            }),
            None => load_key(&paths, file.key_store)?,
        };
        let ca_cert = file.ca_cert.clone().map(|value| Sourced {
            value,
            source: Source::ConfigFile(config_path),
        });
        Ok(Self {
            paths,
            url,
            master_key,
            ca_cert,
            file,
            env,
        })
    }

    /// Saves `url` and `key` as the client's login, choosing the key store as documented.
    /// Returns a one-line notice of where the key went.
    pub fn save_login(&self, url: &str, key: &Secret, ca_cert: Option<&Path>) -> Result<String, SettingsError> {
        save_login(&self.paths, &self.env, url, key, ca_cert)
    }

    /// Forgets the saved key (both stores) and the saved URL. Returns what was removed.
    pub fn logout(&self) -> Result<Vec<String>, SettingsError> {
        let mut removed = Vec::new();
        let creds = self.paths.credentials_file();
        if creds.exists() {
            std::fs::remove_file(&creds).map_err(|source| SettingsError::Write {
                path: creds.clone(),
                source,
            })?;
            removed.push(format!("`{}`", creds.display()));
        }
        if self.file.key_store == Some(KeyStore::Keyring) && keyring_delete().is_ok() {
            removed.push("the master key in the OS keyring".to_owned());
        }
        let config = self.paths.config_file();
        if config.exists() && (self.file.url.is_some() || self.file.key_store.is_some()) {
            let kept = ConfigFile {
                ca_cert: self.file.ca_cert.clone(),
                ..ConfigFile::default()
            };
            write_config(&config, &kept)?;
            if self.file.url.is_some() {
                removed.push(format!("the server URL in `{}`", config.display()));
            }
        }
        Ok(removed)
    }
}

/// Saves a login (used by `lap login` and by the first start of `lap serve`).
pub fn save_login(
    paths: &Paths,
    env: &Env,
    url: &str,
    key: &Secret,
    ca_cert: Option<&Path>,
) -> Result<String, SettingsError> {
    // Why the key went to the file, for the notice.
    const NO_KEYRING: &str = "; no OS keyring was reachable";
    let (store, why_file) = match env.credential_store.as_deref() {
        None | Some("auto") if env.session_bus => match keyring_set(key) {
            Ok(()) => (KeyStore::Keyring, ""),
            Err(err) => {
                tracing::debug!(error = %err, "keyring unavailable, using the credentials file");
                (KeyStore::File, NO_KEYRING)
            }
        },
        None | Some("auto") => (KeyStore::File, NO_KEYRING),
        Some("file") => (KeyStore::File, ", as `LAP_CREDENTIAL_STORE=file` asks"),
        Some("keyring") => {
            keyring_set(key)?;
            (KeyStore::Keyring, "")
        }
        Some(other) => return Err(SettingsError::BadStoreChoice(other.to_owned())),
    };
    let creds = paths.credentials_file();
    let notice = match store {
        KeyStore::File => {
            let body = toml::to_string(&Credentials {
                master_key: key.expose().to_owned(),
            })
            .expect("toml");
            write_private_file(&creds, body.as_bytes()).map_err(|source| SettingsError::Write {
                path: creds.clone(),
                source,
            })?;
            format!("saved the master key in `{}` (mode 0600){why_file}", creds.display())
        }
        KeyStore::Keyring => {
            if creds.exists() {
                let _ = std::fs::remove_file(&creds);
            }
            "saved the master key in the OS keyring".to_owned()
        }
    };
    let config = ConfigFile {
        url: Some(url.to_owned()),
        ca_cert: ca_cert.map(Path::to_owned),
        key_store: Some(store),
    };
    write_config(&paths.config_file(), &config)?;
    Ok(notice)
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    master_key: String,
}

fn read_config(path: &Path) -> Result<ConfigFile, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|err| SettingsError::Parse {
            path: path.to_owned(),
            message: err.message().to_owned(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(source) => Err(SettingsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_config(path: &Path, config: &ConfigFile) -> Result<(), SettingsError> {
    let body = format!(
        "# lap client configuration; `lap config` shows the effective values\n{}",
        toml::to_string(config).expect("toml")
    );
    write_private_file(path, body.as_bytes()).map_err(|source| SettingsError::Write {
        path: path.to_owned(),
        source,
    })
}

fn load_key(paths: &Paths, store: Option<KeyStore>) -> Result<Option<Sourced<Secret>>, SettingsError> {
    if store == Some(KeyStore::Keyring) {
        return match keyring_get() {
            Ok(Some(key)) => Ok(Some(Sourced {
                value: key,
                source: Source::Keyring,
            })),
            Ok(None) => Ok(None),
            Err(err) => Err(err),
        };
    }
    let path = paths.credentials_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let creds: Credentials = toml::from_str(&text).map_err(|err| SettingsError::Parse {
                path: path.clone(),
                message: err.message().to_owned(),
            })?;
            Ok(Some(Sourced {
                value: Secret::new(creds.master_key),
                source: Source::CredentialsFile(path),
            }))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SettingsError::Read { path, source }),
    }
}

/// Writes `bytes` to `path` atomically, the file being mode 0600 from the moment it exists.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut file = crate::platform::create_private_file(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn keyring_entry() -> Result<keyring_core::Entry, SettingsError> {
    let store = crate::platform::keyring_store().map_err(|e| SettingsError::Keyring(e.to_string()))?;
    keyring_core::Entry::new_in_store(&store, KEYRING_SERVICE, "master-key")
        .map_err(|e| SettingsError::Keyring(e.to_string()))
}

fn keyring_set(key: &Secret) -> Result<(), SettingsError> {
    keyring_entry()?
        .set_password(key.expose())
        .map_err(|e| SettingsError::Keyring(e.to_string()))
}

fn keyring_get() -> Result<Option<Secret>, SettingsError> {
    match keyring_entry()?.get_password() {
        Ok(key) => Ok(Some(Secret::new(key))),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(SettingsError::Keyring(e.to_string())),
    }
}

fn keyring_delete() -> Result<(), SettingsError> {
    keyring_entry()?
        .delete_credential()
        .map_err(|e| SettingsError::Keyring(e.to_string()))
}

/// The effective settings as `lap config` prints them; the key is masked.
#[derive(Debug, Serialize)]
pub struct Report {
    pub values: BTreeMap<&'static str, ReportValue>,
}

#[derive(Debug, Serialize)]
pub struct ReportValue {
    pub value: Option<String>,
    pub source: Option<Source>,
}

impl Settings {
    pub fn report(&self) -> Report {
        let mut values = BTreeMap::new();
        values.insert(
            "url",
            ReportValue {
                value: Some(self.url.value.clone()),
                source: Some(self.url.source.clone()),
            },
        );
        values.insert(
            "master_key",
            ReportValue {
                value: self.master_key.as_ref().map(|k| k.value.masked()),
                source: self.master_key.as_ref().map(|k| k.source.clone()),
            },
        );
        values.insert(
            "ca_cert",
            ReportValue {
                value: self.ca_cert.as_ref().map(|c| c.value.display().to_string()),
                source: self.ca_cert.as_ref().map(|c| c.source.clone()),
            },
        );
        values.insert(
            "config_file",
            ReportValue {
                value: Some(self.paths.config_file().display().to_string()),
                source: None,
            },
        );
        Report { values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: dir.path().join("lap"),
        };
        (dir, paths)
    }

    fn file_env() -> Env {
        Env {
            credential_store: Some("file".into()),
            ..Env::default()
        }
    }

    #[test]
    fn tool_deadlines_take_whole_positive_seconds_default_when_unset_and_refuse_the_rest() {
        let env = |start: Option<&str>| Env {
            tool_start_timeout: start.map(str::to_owned),
            ..Env::default()
        };
        assert_eq!(ToolDeadlines::from_env(&env(None)), Ok(ToolDeadlines::DEFAULT));
        assert_eq!(
            ToolDeadlines::from_env(&env(Some(" 3 "))).map(|d| d.start),
            Ok(Duration::from_secs(3))
        );
        for refused in ["0", "-1", "2.5", "soon", "3s"] {
            let err = ToolDeadlines::from_env(&env(Some(refused))).unwrap_err();
            assert!(err.contains("`LAP_TOOL_START_TIMEOUT` is"), "{err}");
            assert!(err.contains(refused), "{err}");
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let (_dir, paths) = paths();
        let s = Settings::resolve(paths, Env::default(), None).unwrap();
        assert_eq!(s.url.value, DEFAULT_URL);
        assert_eq!(s.url.source, Source::Default);
        assert!(s.master_key.is_none());
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let (_dir, paths) = paths();
        save_login(&paths, &file_env(), "http://file:1", &Secret::new("k-file-123"), None).unwrap();
        let env = Env {
            lap_url: Some("http://env:2/".into()),
            ..file_env()
        };
        let s = Settings::resolve(paths.clone(), env.clone(), Some("http://flag:3".into())).unwrap();
        assert_eq!((s.url.value.as_str(), s.url.source), ("http://flag:3", Source::Flag));
        let s = Settings::resolve(paths.clone(), env, None).unwrap();
        assert_eq!(s.url.value, "http://env:2");
        let s = Settings::resolve(paths.clone(), file_env(), None).unwrap();
        assert_eq!(s.url.value, "http://file:1");
        assert_eq!(s.master_key.unwrap().value.expose(), "k-file-123");
        let env = Env {
            master_key: Some("k-env-456".into()),
            ..file_env()
        };
        let s = Settings::resolve(paths, env, None).unwrap();
        assert_eq!(s.master_key.unwrap().source, Source::Env("LAP_MASTER_KEY".into()));
    }

    #[test]
    fn credentials_file_is_private_from_the_start() {
        let (_dir, paths) = paths();
        let notice = save_login(&paths, &file_env(), DEFAULT_URL, &Secret::new("secret-key"), None).unwrap();
        assert!(notice.contains("mode 0600"), "{notice}");
        for file in [paths.credentials_file(), paths.config_file()] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(&paths.config_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn rewriting_a_loose_file_leaves_it_private() {
        let (_dir, paths) = paths();
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.credentials_file(), "old").unwrap();
        std::fs::set_permissions(paths.credentials_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        save_login(&paths, &file_env(), DEFAULT_URL, &Secret::new("k"), None).unwrap();
        let mode = std::fs::metadata(paths.credentials_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn logout_forgets_key_and_url() {
        let (_dir, paths) = paths();
        save_login(&paths, &file_env(), "http://x:1", &Secret::new("k"), None).unwrap();
        let s = Settings::resolve(paths.clone(), file_env(), None).unwrap();
        assert_eq!(s.logout().unwrap().len(), 2);
        let s = Settings::resolve(paths, file_env(), None).unwrap();
        assert!(s.master_key.is_none());
        assert_eq!(s.url.source, Source::Default);
    }

    #[test]
    fn a_broken_config_file_is_named_in_the_error() {
        let (_dir, paths) = paths();
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.config_file(), "url = [").unwrap();
        let err = Settings::resolve(paths, Env::default(), None).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
    }
}
