//! The CLI's error type: typed module errors wrapped at the edge, rendered in one place.
//!
//! [`report`] prints `error: <message>`, each cause as `  caused by: …`, then a `hint:` line that
//! says what to do, and picks the exit code: 1 for failures, 2 for usage errors (clap's own usage
//! errors exit 2 as well).

use std::error::Error as _;
use std::process::ExitCode;

use crate::client::ClientError;
use crate::settings::SettingsError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{message}")]
    Usage { message: String, hint: Option<String> },
    #[error("{message}")]
    Failed { message: String, hint: Option<String> },
    /// The user stopped the command with Ctrl-C (exit code 130, as a shell reports SIGINT).
    #[error("{message}")]
    Interrupted { message: String, hint: Option<String> },
    #[error("{what} is not available yet")]
    NotYet { what: String, hint: &'static str },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed_with_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Client(err) => err.hint(),
            Self::Settings(SettingsError::Keyring(_)) => {
                Some("set `LAP_CREDENTIAL_STORE=file` to keep the key in a 0600 file instead; see docs/troubleshooting.md#keyring".into())
            }
            Self::Settings(SettingsError::Parse { path, .. }) => {
                Some(format!("fix or delete `{}`, then run `lap login`", path.display()))
            }
            Self::Settings(_) => None,
            Self::Store(StoreError::TooNew { .. }) => Some("upgrade lap, or point --data-dir elsewhere".into()),
            Self::Store(_) => Some("check that the data dir is writable and not used by another lap serve".into()),
            Self::Usage { hint, .. } | Self::Failed { hint, .. } | Self::Interrupted { hint, .. } => hint.clone(),
            Self::NotYet { hint, .. } => Some((*hint).to_owned()),
            Self::Io { .. } => None,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. } => 2,
            Self::Interrupted { .. } => 130,
            _ => 1,
        }
    }
}

/// Prints the error with its causes and hint to stderr, and returns the exit code.
pub fn report(err: &Error) -> ExitCode {
    eprintln!("{}", render(err));
    ExitCode::from(err.exit_code())
}

/// An error's message followed by its causes, on one line: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// The text [`report`] prints.
pub fn render(err: &Error) -> String {
    let mut out = format!("error: {err}");
    // A `transparent` variant's `source()` is already its inner error's cause, not the inner error.
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    if let Some(hint) = err.hint() {
        out.push_str(&format!("\nhint: {hint}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_causes_and_hint() {
        let err = Error::io("cannot read `x`", std::io::Error::other("disk on fire"));
        assert_eq!(render(&err), "error: cannot read `x`\n  caused by: disk on fire");
        let err = Error::usage("bad flag", "try --help");
        assert_eq!(render(&err), "error: bad flag\nhint: try --help");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_wrapped_module_error_keeps_its_cause() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = Error::from(SettingsError::Write {
            path: "/home/u/.config/lap/config.toml".into(),
            source: denied,
        });
        assert_eq!(
            render(&err),
            "error: cannot write `/home/u/.config/lap/config.toml`\n  caused by: permission denied"
        );
    }
}
