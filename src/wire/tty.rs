//! The terminal WebSocket: `GET /api/v1/managed_agents/sessions/{id}/tty` on `lap serve`.
//!
//! Auth. The session's own `tty_token` (256 random bits, minted per session) as
//! `Authorization: Bearer <token>`, or as `?token=<token>` for proxies that strip upgrade headers;
//! compared in constant time. The master key is not a terminal credential, and one session's token
//! never opens another's terminal: both get 401 before any upgrade.
//!
//! Client → server (LAP's framing, accepted unchanged so LAP's own CLI works):
//! - a binary frame is input, written to the PTY verbatim;
//! - a text frame starting with `{` is JSON control: `{"type":"resize","cols":N,"rows":M}` sets the
//!   viewer's size (each dimension clamped to `1..=`[`MAX_DIMENSION`]), `{"type":"ping"}` is an
//!   application keepalive and is ignored, as is valid JSON of any other `type`; text starting with
//!   `{` that is not a JSON object with a string `type` is input, as in LAP;
//! - any other text frame is input (its UTF-8 bytes).
//!
//! A frame or message over [`MAX_FRAME`] bytes ends the connection.
//!
//! Server → client: binary frames of PTY output, in order. The first is a repaint of the current
//! screen (escape sequences that draw it on a blank terminal), never a replay of past output. A
//! viewer that falls behind is sent a fresh repaint instead of what it missed. Without a subprotocol
//! (LAP's CLI), the agent's exit is a text line `[process exited (code=N)]` then a close. A client
//! that offers the subprotocol [`SUBPROTOCOL`] (`lap.tty.v1`) also gets typed text frames, JSON
//! [`ServerMessage`]s: `{"type":"repaint"}` right before each repaint's bytes,
//! `{"type":"viewers","count":N}` whenever viewers come or go, `{"type":"exit","code":N}` when the
//! agent exits (then a normal close), `{"type":"error","message":…}` before a close for a failure.
//!
//! Keepalive. Both sides send WebSocket pings every [`KEEPALIVE`]; pings are answered by the
//! WebSocket layer. This module depends on nothing else of ours.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The subprotocol that adds typed server messages.
pub const SUBPROTOCOL: &str = "lap.tty.v1";
/// Largest frame, and message, either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// Interval of WebSocket pings (under common 60 s idle timeouts of load balancers).
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// Largest terminal dimension accepted in a resize.
pub const MAX_DIMENSION: u16 = 1000;
/// The size a client reports when it does not know its own (LAP's default).
pub const DEFAULT_COLS: u16 = 100;
pub const DEFAULT_ROWS: u16 = 30;
/// The query parameter that carries the token when headers cannot.
pub const TOKEN_PARAM: &str = "token";

/// What a client frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Bytes for the PTY.
    Input(Vec<u8>),
    /// The client's terminal size, clamped.
    Resize { cols: u16, rows: u16 },
    /// A keepalive, or control the server does not know: nothing to do.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtyError {
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
}

/// The JSON control messages a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Resize { cols: f64, rows: f64 },
    Ping,
}

impl Control {
    /// The text frame of this message.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A resize for a terminal of this size.
    pub fn resize(cols: u16, rows: u16) -> Self {
        Self::Resize {
            cols: f64::from(cols),
            rows: f64::from(rows),
        }
    }
}

impl ClientFrame {
    /// Decodes a binary frame.
    pub fn from_binary(data: &[u8]) -> Result<Self, TtyError> {
        if data.len() > MAX_FRAME {
            return Err(TtyError::TooLarge(data.len()));
        }
        Ok(Self::Input(data.to_vec()))
    }

    /// Decodes a text frame.
    pub fn from_text(text: &str) -> Result<Self, TtyError> {
        if text.len() > MAX_FRAME {
            return Err(TtyError::TooLarge(text.len()));
        }
        if !text.starts_with('{') {
            return Ok(Self::Input(text.as_bytes().to_vec()));
        }
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text) else {
            return Ok(Self::Input(text.as_bytes().to_vec()));
        };
        if !object.get("type").is_some_and(serde_json::Value::is_string) {
            return Ok(Self::Input(text.as_bytes().to_vec()));
        }
        Ok(
            match serde_json::from_value::<Control>(serde_json::Value::Object(object)) {
                Ok(Control::Resize { cols, rows }) if cols.is_finite() && rows.is_finite() => Self::Resize {
                    cols: clamp_dimension(cols),
                    rows: clamp_dimension(rows),
                },
                // A ping, a resize with non-numbers, or a type this server does not know.
                _ => Self::Ignore,
            },
        )
    }
}

fn clamp_dimension(value: f64) -> u16 {
    // `as` saturates; NaN is excluded by the caller.
    (value as u16).clamp(1, MAX_DIMENSION)
}

/// Typed server messages of [`SUBPROTOCOL`], sent as text frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// The next binary frame draws the whole screen.
    Repaint,
    Viewers {
        count: u32,
    },
    Exit {
        code: i32,
    },
    Error {
        message: String,
    },
}

impl ServerMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a text frame from the server; `None` when it is not a typed message.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The line a client without the subprotocol gets when the agent exits.
pub fn exit_line(code: i32) -> String {
    format!("\r\n[process exited (code={code})]\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_and_plain_text_are_input() {
        assert_eq!(
            ClientFrame::from_binary(b"ls\r"),
            Ok(ClientFrame::Input(b"ls\r".to_vec()))
        );
        assert_eq!(ClientFrame::from_text("ls\r"), Ok(ClientFrame::Input(b"ls\r".to_vec())));
    }

    #[test]
    fn json_control_resizes_and_pings() {
        assert_eq!(
            ClientFrame::from_text(r#"{"type":"resize","cols":120,"rows":40}"#),
            Ok(ClientFrame::Resize { cols: 120, rows: 40 })
        );
        assert_eq!(
            ClientFrame::from_text(&Control::resize(80, 24).to_text()),
            Ok(ClientFrame::Resize { cols: 80, rows: 24 })
        );
        assert_eq!(ClientFrame::from_text(r#"{"type":"ping"}"#), Ok(ClientFrame::Ignore));
        // Out-of-range sizes are clamped, not trusted.
        assert_eq!(
            ClientFrame::from_text(r#"{"type":"resize","cols":0,"rows":1e9}"#),
            Ok(ClientFrame::Resize {
                cols: 1,
                rows: MAX_DIMENSION
            })
        );
    }

    #[test]
    fn bad_json_control_is_input_or_ignored_never_an_error() {
        // Not JSON at all: keystrokes, as in LAP.
        assert_eq!(
            ClientFrame::from_text("{oops"),
            Ok(ClientFrame::Input(b"{oops".to_vec()))
        );
        // JSON without a type: keystrokes.
        assert_eq!(ClientFrame::from_text("{}"), Ok(ClientFrame::Input(b"{}".to_vec())));
        // A known type with bad fields, or an unknown type: ignored.
        assert_eq!(
            ClientFrame::from_text(r#"{"type":"resize","cols":"wide","rows":2}"#),
            Ok(ClientFrame::Ignore)
        );
        assert_eq!(ClientFrame::from_text(r#"{"type":"dance"}"#), Ok(ClientFrame::Ignore));
    }

    #[test]
    fn oversize_frames_are_refused() {
        let big = vec![b'x'; MAX_FRAME + 1];
        assert_eq!(ClientFrame::from_binary(&big), Err(TtyError::TooLarge(MAX_FRAME + 1)));
        let text = String::from_utf8(big).unwrap();
        assert_eq!(ClientFrame::from_text(&text), Err(TtyError::TooLarge(MAX_FRAME + 1)));
        assert!(ClientFrame::from_binary(&vec![0; MAX_FRAME]).is_ok());
    }

    #[test]
    fn server_messages_are_tagged_json() {
        assert_eq!(ServerMessage::Exit { code: 3 }.to_text(), r#"{"type":"exit","code":3}"#);
        assert_eq!(
            ServerMessage::parse(r#"{"type":"viewers","count":2}"#),
            Some(ServerMessage::Viewers { count: 2 })
        );
        assert_eq!(ServerMessage::parse("hello"), None);
    }
}
