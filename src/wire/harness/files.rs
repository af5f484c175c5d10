//! The file operations' messages and frame kinds (the `fs_*` requests of [`super::Request`]): the
//! control plane (`sandbox/files.rs`, `api/files.rs`) speaks them to a harness of either backend
//! wherever `lap serve` runs, while the operations themselves (`sandbox/local/files.rs`, which
//! specifies the protocol in its module doc) are Linux-only.

use serde::{Deserialize, Serialize};

use crate::wire::files::{FileEntry, FileError};

/// Data: file bytes, a tar stream, or listing lines.
pub const FILE_DATA: u8 = 16;
/// The operation succeeded: a JSON [`Summary`].
pub const FILE_END: u8 = 17;
/// The operation failed after its reply: a JSON [`FileError`].
pub const FILE_FAIL: u8 = 18;

/// `fs_stat`, `fs_list`: a path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathRequest {
    pub path: String,
}

/// Part of a file, as an HTTP `Range` names it (`bytes=start-end`, `bytes=start-`, `bytes=-suffix`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte; `None`: the last `end` bytes.
    pub start: Option<u64>,
    /// Last byte (inclusive); with no `start`, how many bytes from the end.
    pub end: Option<u64>,
}

/// `fs_read`: a file (or part of it), or a directory as a tar stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ByteRange>,
    /// A directory is sent as a tar stream of its contents (else reading one is an error).
    #[serde(default)]
    pub archive: bool,
}

/// `fs_write`: a file, or (with `archive`) a tar stream unpacked into a directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteRequest {
    pub path: String,
    /// Permission bits of the file (default: those of the file replaced, else 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub archive: bool,
    /// Bytes accepted before the write fails with [`crate::wire::files::FileErrorCode::TooLarge`].
    pub max_bytes: u64,
}

/// `fs_delete`: a file, a link, an empty directory, or (with `recursive`) a tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

/// The harness's first answer to a file operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// The path operated on (for a read: what is sent; the whole file's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<FileEntry>,
    /// For a read: the first byte sent and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FileError>,
}

/// What a finished operation did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Bytes read or written.
    #[serde(default)]
    pub bytes: u64,
    /// Entries listed, written or deleted.
    #[serde(default)]
    pub entries: u64,
    /// Entries a listing left out past [`crate::wire::files::MAX_LIST_ENTRIES`].
    #[serde(default)]
    pub truncated: u64,
}
