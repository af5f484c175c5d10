//! `Secret`: a real credential value or key held in memory.
//!
//! It deliberately implements neither `Serialize` nor `Display`, and its `Debug` prints `***`, so a
//! secret cannot reach a log line, an API response or a snapshot by accident. Code that needs the
//! bytes asks for them with [`Secret::expose`], which is easy to grep for.

use std::fmt;

use subtle::ConstantTimeEq;

/// A value that must never be printed, serialised or sent anywhere but where it is meant to go.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The real value. Every call site is a place where the secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in constant time (for the length of the shorter input).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other))
    }

    /// A masked form for display: the first four characters and the length.
    pub fn masked(&self) -> String {
        let head: String = self.0.chars().take(4).collect();
        format!("{head}… ({} chars)", self.0.chars().count())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("sk-real-value");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret)), "Some(***)");
    }

    #[test]
    fn constant_time_comparison_matches_only_equal_values() {
        let secret = Secret::new("abcdef");
        assert!(secret.ct_eq(b"abcdef"));
        assert!(!secret.ct_eq(b"abcdeg"));
        assert!(!secret.ct_eq(b"abcde"));
    }

    #[test]
    fn masked_form_keeps_only_a_prefix() {
        assert_eq!(Secret::new("lapk_0123456789").masked(), "lapk… (15 chars)");
    }
}
