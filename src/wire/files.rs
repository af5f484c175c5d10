//! The file API's shapes: what a listing or a stat of a path inside a sandbox says, and the
//! errors a file operation can end in, shared by the harness (which does the operation), `lap serve`
//! (which answers `…/sessions/{id}/files…`) and the CLI (`lap ls`, `lap cp`).
//!
//! Paths are the sandbox's own: absolute under `/work` or `/tmp`, or relative to the sandbox user's
//! home (`/work/home`). Everything else (`..`, other absolute paths, symlinks that lead out) is
//! refused with [`FileErrorCode::Forbidden`]. Times are RFC 3339, modes are the permission bits as
//! four octal digits (`"0644"`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The directories of a sandbox the file API reaches; nothing outside them is read or written.
pub const ROOTS: &[&str] = &["/work", "/tmp"];
/// Most entries one listing returns (the rest are counted in [`FileList::truncated`]).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Default largest upload `lap serve` accepts, in bytes (`lap serve --max-upload-bytes`).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// What a directory entry is (a symlink is reported as itself, not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A FIFO, socket or device: listed, never read or written.
    Other,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Other => "other",
        }
    }
}

/// One file, directory or link inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// The last component of the path (the directory itself: its own name).
    pub name: String,
    /// The absolute path inside the sandbox.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Bytes (of a file; of a link, the length of its target).
    pub size: u64,
    /// Permission bits, four octal digits (`"0755"`).
    pub mode: String,
    /// Last modification, RFC 3339.
    pub modified: String,
    /// Where a symlink points (as written in the link; never followed out of `/work` or `/tmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A directory listing (`GET …/files?path=DIR`); listing a file lists that file alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    /// The path listed (absolute).
    pub path: String,
    /// The listed path itself.
    pub entry: FileEntry,
    /// Its entries, sorted by name (a file: the file alone).
    pub entries: Vec<FileEntry>,
    /// Entries left out past [`MAX_LIST_ENTRIES`].
    #[serde(default)]
    pub truncated: u64,
}

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    /// Where it was written (absolute).
    pub path: String,
    /// Bytes received (of the file, or of the tar archive).
    pub bytes: u64,
    /// Files, directories and links written (1 for a plain file).
    pub entries: u64,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub path: String,
    /// Files, directories and links removed.
    pub entries: u64,
}

/// Why a file operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileErrorCode {
    /// Nothing at that path.
    NotFound,
    /// Outside `/work` and `/tmp`: `..`, another absolute path, or a symlink that leads out.
    Forbidden,
    /// The sandbox user may not do that (file modes).
    PermissionDenied,
    IsDirectory,
    NotDirectory,
    /// A non-empty directory without `recursive`, or a name that is taken.
    Conflict,
    /// Over the upload limit.
    TooLarge,
    /// A `Range` past the end of the file.
    RangeNotSatisfiable,
    /// A request that makes no sense (a bad mode, a tar entry of an unsupported kind, …).
    Invalid,
    /// The sandbox's filesystem failed (full, read-only, …).
    Io,
}

/// A failed file operation: what kind of failure, and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    pub code: FileErrorCode,
    pub message: String,
}

impl FileError {
    pub fn new(code: FileErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Formats permission bits as four octal digits.
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Parses permission bits written in octal (`"644"`, `"0644"`, `"0o644"`).
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_four_octal_digits_both_ways() {
        assert_eq!(format_mode(0o100644), "0644");
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode("77777"), None);
        assert_eq!(parse_mode(""), None);
    }

    #[test]
    fn an_entry_serialises_with_type_and_without_an_absent_target() {
        let entry = FileEntry {
            name: "a".into(),
            path: "/work/a".into(),
            kind: FileKind::File,
            size: 3,
            mode: "0644".into(),
            modified: "2026-01-01T00:00:00Z".into(),
            target: None,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"name":"a","path":"/work/a","type":"file","size":3,"mode":"0644","modified":"2026-01-01T00:00:00Z"}"#
        );
    }
}
