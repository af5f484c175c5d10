//! The local terminal while attached: raw mode, its size, and the detach keys.
//!
//! [`RawMode`] puts the terminal in raw mode and restores it when dropped; a panic hook installed
//! once restores it too, so a panic never leaves the user's shell without echo. Signals (SIGTERM,
//! SIGHUP, SIGINT) are turned into a clean exit by the attach loop, which drops the guard. Nothing
//! here talks to the network.

use std::sync::Once;

use crate::wire::tty::{DEFAULT_COLS, DEFAULT_ROWS};

/// The detach keys when none are given: Ctrl-D alone, as in LAP.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-d";

/// Raw mode on the controlling terminal while this lives.
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> std::io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = crossterm::terminal::disable_raw_mode();
                previous(info);
            }));
        });
        crossterm::terminal::enable_raw_mode()?;
        Ok(Self(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// The terminal's size as (columns, rows), LAP's 100×30 when it has none.
pub fn size() -> (u16, u16) {
    crossterm::terminal::size().unwrap_or((DEFAULT_COLS, DEFAULT_ROWS))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a key; use e.g. `ctrl-d`, `ctrl-p,ctrl-q`, `x` or `none`")]
pub struct BadKey(String);

/// A key sequence that detaches, as typed bytes (empty: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    /// Parses `ctrl-<letter>`, `ctrl-[`/`ctrl-]`/`ctrl-\`/`ctrl-@`, single characters, comma-separated;
    /// `none` disables detaching.
    pub fn parse(spec: &str) -> Result<Self, BadKey> {
        if spec.eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        let mut bytes = Vec::new();
        for key in spec.split(',') {
            let lower = key.trim().to_ascii_lowercase();
            let byte = match lower.strip_prefix("ctrl-") {
                Some(rest) if rest.len() == 1 => match rest.as_bytes()[0] {
                    c @ b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 0x1b,
                    b'\\' => 0x1c,
                    b']' => 0x1d,
                    _ => return Err(BadKey(key.to_owned())),
                },
                None if key.len() == 1 && key.is_ascii() => key.as_bytes()[0],
                _ => return Err(BadKey(key.to_owned())),
            };
            bytes.push(byte);
        }
        Ok(Self(bytes))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for DetachKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .iter()
            .map(|&b| match b {
                0 => "Ctrl-@".to_owned(),
                1..=26 => format!("Ctrl-{}", char::from(b'A' + b - 1)),
                0x1b => "Ctrl-[".to_owned(),
                0x1c => "Ctrl-\\".to_owned(),
                0x1d => "Ctrl-]".to_owned(),
                _ => char::from(b).to_string(),
            })
            .collect();
        f.write_str(&names.join(" "))
    }
}

/// What [`DetachMatcher::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Keys {
    /// Send these bytes on.
    Forward(Vec<u8>),
    /// The detach keys were typed: send these bytes (typed before them), then detach.
    Detach(Vec<u8>),
}

/// Watches typed bytes for the detach keys; a partial match is held back until it completes or
/// fails, so the keys themselves never reach the agent.
#[derive(Debug)]
pub struct DetachMatcher {
    keys: DetachKeys,
    matched: usize,
}

impl DetachMatcher {
    pub fn new(keys: DetachKeys) -> Self {
        Self { keys, matched: 0 }
    }

    pub fn feed(&mut self, input: &[u8]) -> Keys {
        let keys = &self.keys.0;
        if keys.is_empty() {
            return Keys::Forward(input.to_vec());
        }
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if byte == keys[self.matched] {
                self.matched += 1;
                if self.matched == keys.len() {
                    self.matched = 0;
                    return Keys::Detach(out);
                }
                continue;
            }
            out.extend_from_slice(&keys[..self.matched]);
            self.matched = usize::from(byte == keys[0]);
            if self.matched == 0 {
                out.push(byte);
            }
        }
        Keys::Forward(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(DetachKeys::parse("ctrl-d"), Ok(DetachKeys(vec![4])));
        assert_eq!(DetachKeys::parse("ctrl-p,ctrl-q"), Ok(DetachKeys(vec![0x10, 0x11])));
        assert_eq!(DetachKeys::parse("ctrl-]"), Ok(DetachKeys(vec![0x1d])));
        assert!(DetachKeys::parse("none").unwrap().is_none());
        assert!(DetachKeys::parse("ctrl-ä").is_err());
        assert!(DetachKeys::parse("meta-x").is_err());
        assert_eq!(DetachKeys::parse("ctrl-p,ctrl-q").unwrap().to_string(), "Ctrl-P Ctrl-Q");
    }

    #[test]
    fn ctrl_d_detaches_and_other_keys_pass_through() {
        let mut m = DetachMatcher::new(DetachKeys::parse(DEFAULT_DETACH_KEYS).unwrap());
        assert_eq!(m.feed(b"ls\r"), Keys::Forward(b"ls\r".to_vec()));
        assert_eq!(m.feed(b"ab\x04"), Keys::Detach(b"ab".to_vec()));
        let mut none = DetachMatcher::new(DetachKeys::parse("none").unwrap());
        assert_eq!(none.feed(b"\x04"), Keys::Forward(b"\x04".to_vec()));
    }

    #[test]
    fn a_sequence_is_held_until_it_completes_or_breaks() {
        let mut m = DetachMatcher::new(DetachKeys::parse("ctrl-p,ctrl-q").unwrap());
        assert_eq!(m.feed(b"a\x10"), Keys::Forward(b"a".to_vec()));
        assert_eq!(m.feed(b"\x11"), Keys::Detach(Vec::new()));
        assert_eq!(m.feed(b"\x10x"), Keys::Forward(b"\x10x".to_vec()));
        assert_eq!(m.feed(b"\x10\x10\x11"), Keys::Detach(b"\x10".to_vec()));
    }
}
