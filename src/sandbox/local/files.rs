//! The harness's file operations: stat, list, read (a byte range, or a directory as a tar stream),
//! write (a file, or a tar stream into a directory) and delete, on paths of the sandbox.
//!
//! Confinement is the invariant this module keeps (the walls are in [`confine`]): an operation reaches nothing outside `/work` and
//! `/tmp` ([`ROOTS`]), whatever the hostile agent has done to those trees, and nothing the sandbox
//! user could not reach itself. Four walls:
//! 1. The path is checked as text: absolute under a root, or relative to the sandbox user's home;
//!    any `..` component is refused ([`resolve`]).
//! 2. It is opened below the root's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
//!    so a symlink that leads out (absolute, or `..` past the root) is refused by the kernel in the
//!    same call that opens — a link swapped in while an operation runs cannot win a race. A kernel
//!    without `openat2` gets a walk one component at a time with `O_NOFOLLOW`, which refuses every
//!    symlink ([`beneath`]). Below the opened directory, everything (tar walks, extraction, recursive
//!    deletes) goes by `*at` calls on descriptors with `O_NOFOLLOW`, never by path.
//! 3. Each operation runs on a thread of its own that first becomes the sandbox user — uid, gid and
//!    groups set by raw system calls (which change this thread only), every capability dropped —
//!    so file modes apply exactly as they do to the agent ([`become_user`]).
//! 4. Where the kernel has Landlock, that thread is also restricted to `/work` and `/tmp`.
//!
//! Protocol (on `harness.sock`, or the pod harness's TCP port; framing of [`crate::wire::harness`]): the
//! request line is one of the `fs_*` ops of [`crate::wire::harness::Request`]. The harness answers one JSON
//! line, a [`Reply`]: its `error` when the operation cannot start. Then, for `fs_list` and `fs_read`,
//! [`FILE_DATA`] frames (`fs_list`: one JSON [`FileEntry`] per line; `fs_read`: the bytes, or the tar
//! stream), and last one [`FILE_END`] (a JSON [`Summary`]) or one [`FILE_FAIL`] (a JSON
//! [`FileError`]). For `fs_write` the client sends [`FILE_DATA`] frames after the reply, ended by an
//! empty one; the harness answers [`FILE_END`] or [`FILE_FAIL`] (also early, e.g. over `max_bytes`).
//! A file is written to a fresh temporary name in its directory and renamed over the target only when
//! complete: an upload cut short leaves nothing, and a symlink at the target is replaced, never
//! written through. A client that goes away ends the operation.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::wire::files::{FileEntry, FileError, FileErrorCode, FileKind, MAX_LIST_ENTRIES, format_mode};
use crate::wire::harness::{self as proto, MAX_FRAME, ProtoError};

mod confine;

use crate::wire::harness::files::{
    ByteRange, DeleteRequest, FILE_DATA, FILE_END, FILE_FAIL, PathRequest, ReadRequest, Reply, Summary, WriteRequest,
};
use confine::open_root;
pub use confine::{Target, become_user, beneath, resolve, walk};

/// Chunks buffered each way between a connection and its operation's thread.
const QUEUE: usize = 8;
/// Deepest directory tree walked (tar, recursive delete, extraction).
const MAX_DEPTH: usize = 256;
/// Mode of an uploaded file when the request names none and nothing is replaced.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory created for an upload.
const DEFAULT_DIR_MODE: u32 = 0o755;

/// A file operation, as the server dispatches it.
#[derive(Debug, Clone)]
pub enum Op {
    Stat(PathRequest),
    List(PathRequest),
    Read(ReadRequest),
    Write(WriteRequest),
    Delete(DeleteRequest),
}

/// Whom an operation runs as, and where relative paths start.
#[derive(Debug, Clone)]
pub struct Who {
    /// The sandbox user's uid (and gid) to become; `None`: this process already is that user.
    pub uid: Option<u32>,
    /// The sandbox user's home.
    pub home: String,
}

/// What a worker thread tells the connection.
enum Msg {
    Reply(Reply),
    Data(Vec<u8>),
    End(Summary),
    Fail(FileError),
}

/// What the connection tells a writing worker.
enum Input {
    Data(Vec<u8>),
    End,
}

/// Serves one file operation on a connection whose request line has been read.
pub async fn serve<R, W>(op: Op, mut rd: BufReader<R>, mut wr: W, who: Who) -> Result<(), ProtoError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let writes = matches!(op, Op::Write(_));
    let (out_tx, mut out_rx) = mpsc::channel::<Msg>(QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Input>(QUEUE);
    std::thread::Builder::new()
        .name("lap-files".into())
        .spawn(move || work(op, who, in_rx, out_tx))
        .map_err(ProtoError::Io)?;
    // Client → worker, for writes: data frames until an empty one; anything else ends the upload
    // (dropping the sender is how the worker learns the client left).
    let pump = async move {
        if !writes {
            return;
        }
        loop {
            match proto::read_frame(&mut rd).await {
                Ok(Some((FILE_DATA, data))) if data.is_empty() => {
                    let _ = in_tx.send(Input::End).await;
                    return;
                }
                Ok(Some((FILE_DATA, data))) => {
                    if in_tx.send(Input::Data(data)).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let forward = async move {
        while let Some(msg) = out_rx.recv().await {
            match msg {
                Msg::Reply(reply) => {
                    let mut line = serde_json::to_vec(&reply).map_err(|e| ProtoError::Protocol(e.to_string()))?;
                    line.push(b'\n');
                    wr.write_all(&line).await?;
                }
                Msg::Data(data) => {
                    for chunk in data.chunks(MAX_FRAME) {
                        proto::write_frame(&mut wr, FILE_DATA, chunk).await?;
                    }
                }
                Msg::End(summary) => {
                    let payload = serde_json::to_vec(&summary).map_err(|e| ProtoError::Protocol(e.to_string()))?;
                    proto::write_frame(&mut wr, FILE_END, &payload).await?;
                }
                Msg::Fail(error) => {
                    let payload = serde_json::to_vec(&error).map_err(|e| ProtoError::Protocol(e.to_string()))?;
                    proto::write_frame(&mut wr, FILE_FAIL, &payload).await?;
                }
            }
        }
        wr.flush().await?;
        Ok::<_, ProtoError>(())
    };
    // The pump may still wait for a frame once the worker is done; the answer is what counts.
    tokio::pin!(pump);
    tokio::pin!(forward);
    let mut pumped = false;
    loop {
        tokio::select! {
            result = &mut forward => return result,
            () = &mut pump, if !pumped => pumped = true,
        }
    }
}

/// The worker: becomes the sandbox user, runs the operation, reports.
fn work(op: Op, who: Who, mut input: mpsc::Receiver<Input>, out: mpsc::Sender<Msg>) {
    let mut out = Out {
        tx: out,
        replied: false,
        done: false,
    };
    let result = match become_user(who.uid) {
        Err(err) => Err(FileError::new(
            FileErrorCode::Io,
            format!("cannot become the sandbox user: {err}"),
        )),
        Ok(()) => match op {
            Op::Stat(request) => stat(&request.path, &who.home, &mut out),
            Op::List(request) => list(&request.path, &who.home, &mut out),
            Op::Read(request) => read(&request, &who.home, &mut out),
            Op::Write(request) if request.archive => unpack(&request, &who.home, &mut input, &mut out),
            Op::Write(request) => write(&request, &who.home, &mut input, &mut out),
            Op::Delete(request) => delete(&request, &who.home, &mut out),
        },
    };
    let msg = match result {
        Ok(_) if out.done => return,
        Ok(summary) => Msg::End(summary),
        Err(error) if !out.replied => Msg::Reply(Reply {
            error: Some(error),
            ..Reply::default()
        }),
        Err(error) => Msg::Fail(error),
    };
    let _ = out.tx.blocking_send(msg);
}

/// The worker's way out.
struct Out {
    tx: mpsc::Sender<Msg>,
    replied: bool,
    /// The reply already said how the operation ended (an error with details).
    done: bool,
}

impl Out {
    fn reply(&mut self, reply: Reply) -> Result<(), FileError> {
        self.replied = true;
        self.send(Msg::Reply(reply))
    }

    fn data(&mut self, data: Vec<u8>) -> Result<(), FileError> {
        self.send(Msg::Data(data))
    }

    fn send(&mut self, msg: Msg) -> Result<(), FileError> {
        self.tx
            .blocking_send(msg)
            .map_err(|_| FileError::new(FileErrorCode::Io, "the client went away"))
    }
}

/// The error of a failed system call on `path`, for a person.
pub(super) fn errno(err: Errno, path: &str) -> FileError {
    use FileErrorCode as C;
    let (code, message) = match err {
        Errno::ENOENT => (C::NotFound, format!("`{path}` does not exist")),
        Errno::EXDEV | Errno::ELOOP => (
            C::Forbidden,
            format!("`{path}` leads outside /work and /tmp through a symlink"),
        ),
        Errno::EACCES | Errno::EPERM => (
            C::PermissionDenied,
            format!("the sandbox user may not do that to `{path}` (permission denied)"),
        ),
        Errno::EISDIR => (C::IsDirectory, format!("`{path}` is a directory")),
        Errno::ENOTDIR => (
            C::NotDirectory,
            format!("`{path}` (or a directory above it) is not a directory"),
        ),
        Errno::ENOTEMPTY => (C::Conflict, format!("`{path}` is a directory that is not empty")),
        Errno::EEXIST => (C::Conflict, format!("`{path}` already exists")),
        Errno::ENOSPC | Errno::EDQUOT => (C::Io, format!("no space left in the sandbox for `{path}`")),
        Errno::ENAMETOOLONG => (C::Invalid, format!("`{path}` is too long a name")),
        other => (C::Io, format!("`{path}`: {}", other.desc())),
    };
    FileError::new(code, message)
}

fn io_error(err: &io::Error, path: &str) -> FileError {
    match err.raw_os_error() {
        Some(code) => errno(Errno::from_raw(code), path),
        None => FileError::new(FileErrorCode::Io, format!("`{path}`: {err}")),
    }
}

fn kind_of(stat: &FileStat) -> FileKind {
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => FileKind::File,
        SFlag::S_IFDIR => FileKind::Directory,
        SFlag::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn entry(name: String, path: String, stat: &FileStat, target: Option<String>) -> FileEntry {
    FileEntry {
        name,
        path,
        kind: kind_of(stat),
        size: stat.st_size.max(0) as u64,
        mode: format_mode(stat.st_mode),
        modified: rfc3339(stat.st_mtime),
        target,
    }
}

fn join(display: &str, name: &str) -> String {
    if display.ends_with('/') {
        format!("{display}{name}")
    } else {
        format!("{display}/{name}")
    }
}

/// `fs_stat`: follows symlinks that stay inside (like `stat -L`).
fn stat(path: &str, home: &str, out: &mut Out) -> Result<Summary, FileError> {
    let target = resolve(path, home)?;
    let root = open_root(target.root)?;
    let fd = beneath(&root, &target.rel, OFlag::O_PATH, Mode::empty()).map_err(|e| errno(e, &target.display))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| errno(e, &target.display))?;
    out.reply(Reply {
        entry: Some(entry(target.name(), target.display.clone(), &st, None)),
        ..Reply::default()
    })?;
    Ok(Summary::default())
}

/// Names in a directory (not `.` and `..`), read through a duplicate of its descriptor.
fn names(dir: &OwnedFd) -> Result<Vec<std::ffi::OsString>, Errno> {
    let mut listing = nix::dir::Dir::from_fd(
        dir.try_clone()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?,
    )?;
    let mut names = Vec::new();
    for item in listing.iter() {
        let item = item?;
        let name = OsStr::from_bytes(item.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// `fs_list`: a directory's entries (links as links), or a file alone.
fn list(path: &str, home: &str, out: &mut Out) -> Result<Summary, FileError> {
    let target = resolve(path, home)?;
    let root = open_root(target.root)?;
    let dir = match beneath(&root, &target.rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::ENOTDIR) => {
            let fd =
                beneath(&root, &target.rel, OFlag::O_PATH, Mode::empty()).map_err(|e| errno(e, &target.display))?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| errno(e, &target.display))?;
            let only = entry(target.name(), target.display.clone(), &st, None);
            out.reply(Reply {
                entry: Some(only.clone()),
                ..Reply::default()
            })?;
            out.data(listing_line(&only))?;
            return Ok(Summary {
                entries: 1,
                ..Summary::default()
            });
        }
        Err(e) => return Err(errno(e, &target.display)),
    };
    let st = nix::sys::stat::fstat(&dir).map_err(|e| errno(e, &target.display))?;
    out.reply(Reply {
        entry: Some(entry(target.name(), target.display.clone(), &st, None)),
        ..Reply::default()
    })?;
    let mut all = names(&dir).map_err(|e| errno(e, &target.display))?;
    let truncated = all.len().saturating_sub(MAX_LIST_ENTRIES) as u64;
    all.truncate(MAX_LIST_ENTRIES);
    all.sort();
    let mut batch = Vec::new();
    let mut entries = 0;
    for name in all {
        let shown = name.to_string_lossy().into_owned();
        let path = join(&target.display, &shown);
        // Gone since it was listed: left out.
        let Ok(st) = nix::sys::stat::fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let link = (kind_of(&st) == FileKind::Symlink)
            .then(|| nix::fcntl::readlinkat(&dir, name.as_os_str()).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned());
        batch.extend(listing_line(&entry(shown, path, &st, link)));
        entries += 1;
        if batch.len() >= MAX_FRAME / 2 {
            out.data(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        out.data(batch)?;
    }
    Ok(Summary {
        entries,
        truncated,
        ..Summary::default()
    })
}

fn listing_line(entry: &FileEntry) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Where a range starts and how long it is in a file of `size` bytes (RFC 9110 §14.1.2); `None`:
/// not satisfiable.
pub fn range_in(range: ByteRange, size: u64) -> Option<(u64, u64)> {
    match (range.start, range.end) {
        (Some(start), end) => {
            if start >= size {
                return None;
            }
            let last = end.unwrap_or(u64::MAX).min(size - 1);
            (last >= start).then(|| (start, last - start + 1))
        }
        (None, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return None;
            }
            let length = suffix.min(size);
            Some((size - length, length))
        }
        (None, None) => Some((0, size)),
    }
}

/// `fs_read`: a file or part of it, or a directory as a tar stream.
fn read(request: &ReadRequest, home: &str, out: &mut Out) -> Result<Summary, FileError> {
    let target = resolve(&request.path, home)?;
    let root = open_root(target.root)?;
    // Non-blocking: a FIFO planted at the path must not hang the open.
    let fd = beneath(
        &root,
        &target.rel,
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| errno(e, &target.display))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| errno(e, &target.display))?;
    let whole = entry(target.name(), target.display.clone(), &st, None);
    match kind_of(&st) {
        FileKind::Directory if request.archive => return send_tar(fd, whole, out),
        FileKind::Directory => {
            return Err(FileError::new(
                FileErrorCode::IsDirectory,
                format!("`{}` is a directory: read it as a tar archive", target.display),
            ));
        }
        FileKind::File => {}
        _ => {
            return Err(FileError::new(
                FileErrorCode::Invalid,
                format!("`{}` is not a regular file", target.display),
            ));
        }
    }
    let size = whole.size;
    let (offset, length) = match request.range {
        None => (0, size),
        Some(range) => match range_in(range, size) {
            Some(found) => found,
            None => {
                // The reply carries the size, for the `416`'s `Content-Range`.
                let error = FileError::new(
                    FileErrorCode::RangeNotSatisfiable,
                    format!("the range is outside `{}` ({size} bytes)", target.display),
                );
                out.reply(Reply {
                    entry: Some(whole),
                    error: Some(error),
                    ..Reply::default()
                })?;
                out.done = true;
                return Ok(Summary::default());
            }
        },
    };
    out.reply(Reply {
        entry: Some(whole),
        offset: Some(offset),
        length: Some(length),
        error: None,
    })?;
    let file = std::fs::File::from(fd);
    let mut sent = 0u64;
    while sent < length {
        let want = (length - sent).min(MAX_FRAME as u64) as usize;
        let mut buf = vec![0u8; want];
        let n = match file.read_at(&mut buf, offset + sent) {
            Ok(0) => {
                return Err(FileError::new(
                    FileErrorCode::Io,
                    format!("`{}` shrank while it was read", target.display),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(&e, &target.display)),
        };
        buf.truncate(n);
        out.data(buf)?;
        sent += n as u64;
    }
    Ok(Summary {
        bytes: sent,
        entries: 1,
        ..Summary::default()
    })
}

/// A `Write` that sends what it is given as [`FILE_DATA`], in chunks of at most [`MAX_FRAME`].
struct Sink<'a> {
    out: &'a mut Out,
    buf: Vec<u8>,
    bytes: u64,
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_FRAME {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.bytes += self.buf.len() as u64;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_FRAME));
        self.out
            .data(chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.message))
    }
}

/// Reads exactly `size` bytes of a file that may change meanwhile: cut when it grew, zeros when it
/// shrank (a tar header has already promised `size`).
struct Exactly {
    file: std::fs::File,
    left: u64,
}

impl Read for Exactly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.file.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Sends directory `dir` as a tar stream of its contents (modes and times kept, links as links,
/// FIFOs, sockets and devices left out).
fn send_tar(dir: OwnedFd, whole: FileEntry, out: &mut Out) -> Result<Summary, FileError> {
    let display = whole.path.clone();
    out.reply(Reply {
        entry: Some(whole),
        ..Reply::default()
    })?;
    let dir = nix::fcntl::openat(
        &dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(e, &display))?;
    let mut builder = tar::Builder::new(Sink {
        out,
        buf: Vec::with_capacity(MAX_FRAME),
        bytes: 0,
    });
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let entries = add_tree(&mut builder, &dir, Path::new(""), &display, 0)?;
    let mut sink = builder.into_inner().map_err(|e| io_error(&e, &display))?;
    sink.flush().map_err(|e| io_error(&e, &display))?;
    Ok(Summary {
        bytes: sink.bytes,
        entries,
        ..Summary::default()
    })
}

fn add_tree(
    builder: &mut tar::Builder<Sink<'_>>,
    dir: &OwnedFd,
    prefix: &Path,
    display: &str,
    depth: usize,
) -> Result<u64, FileError> {
    if depth > MAX_DEPTH {
        return Err(FileError::new(
            FileErrorCode::Invalid,
            format!("`{display}` is nested deeper than {MAX_DEPTH} directories"),
        ));
    }
    let mut all = names(dir).map_err(|e| errno(e, display))?;
    all.sort();
    let mut count = 0;
    for name in all {
        let path = prefix.join(&name);
        let shown = join(display, &name.to_string_lossy());
        let Ok(st) = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        header.set_mtime(st.st_mtime.max(0) as u64);
        let failed = |e: io::Error| io_error(&e, &shown);
        match kind_of(&st) {
            FileKind::Directory => {
                let sub = nix::fcntl::openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| errno(e, &shown))?;
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &path, io::empty()).map_err(failed)?;
                count += 1 + add_tree(builder, &sub, &path, &shown, depth + 1)?;
            }
            FileKind::File => {
                let fd = nix::fcntl::openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| errno(e, &shown))?;
                // What was opened, not what was listed: it may have been swapped since.
                let st = nix::sys::stat::fstat(&fd).map_err(|e| errno(e, &shown))?;
                if kind_of(&st) != FileKind::File {
                    continue;
                }
                let size = st.st_size.max(0) as u64;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let body = Exactly {
                    file: std::fs::File::from(fd),
                    left: size,
                };
                builder.append_data(&mut header, &path, body).map_err(failed)?;
                count += 1;
            }
            FileKind::Symlink => {
                let Ok(link) = nix::fcntl::readlinkat(dir, name.as_os_str()) else {
                    continue;
                };
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &path, &link).map_err(failed)?;
                count += 1;
            }
            FileKind::Other => {}
        }
    }
    Ok(count)
}

/// The upload's bytes as the worker receives them, counted against `max_bytes`.
struct Upload<'a> {
    input: &'a mut mpsc::Receiver<Input>,
    buf: Vec<u8>,
    pos: usize,
    bytes: u64,
    max_bytes: u64,
    ended: bool,
    /// Why reading stopped early, for a clearer error than the `io::Error` tar makes of it.
    stop: Option<FileError>,
}

impl<'a> Upload<'a> {
    fn new(input: &'a mut mpsc::Receiver<Input>, max_bytes: u64) -> Self {
        Self {
            input,
            buf: Vec::new(),
            pos: 0,
            bytes: 0,
            max_bytes,
            ended: false,
            stop: None,
        }
    }

    /// The next chunk; `Ok(None)` at the client's end of data.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, FileError> {
        if self.ended {
            return Ok(None);
        }
        match self.input.blocking_recv() {
            Some(Input::Data(data)) => {
                self.bytes += data.len() as u64;
                if self.bytes > self.max_bytes {
                    return Err(FileError::new(
                        FileErrorCode::TooLarge,
                        format!("the upload is over its limit of {} bytes", self.max_bytes),
                    ));
                }
                Ok(Some(data))
            }
            Some(Input::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(FileError::new(FileErrorCode::Io, "the client went away mid-upload")),
        }
    }

    /// Reads to the client's end (what follows a tar's end blocks), still counted.
    fn drain(&mut self) -> Result<(), FileError> {
        while self.next_chunk()?.is_some() {}
        Ok(())
    }
}

impl Read for Upload<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_chunk() {
                Ok(Some(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(error) => {
                    let message = error.message.clone();
                    self.stop = Some(error);
                    return Err(io::Error::other(message));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Removes a temporary upload unless it was renamed into place.
struct Temp<'a> {
    dir: &'a OwnedFd,
    name: String,
    armed: bool,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::unistd::unlinkat(self.dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

fn temp_name() -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(".lap-upload-{hex}")
}

/// `fs_write` of a file: into a temporary name, renamed over the target when complete.
fn write(
    request: &WriteRequest,
    home: &str,
    input: &mut mpsc::Receiver<Input>,
    out: &mut Out,
) -> Result<Summary, FileError> {
    let target = resolve(&request.path, home)?;
    let (parent_rel, name) = target.split().ok_or_else(|| {
        FileError::new(
            FileErrorCode::IsDirectory,
            format!("`{}` is a directory", target.display),
        )
    })?;
    let root = open_root(target.root)?;
    let parent = beneath(&root, parent_rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| errno(e, &target.display))?;
    let existing = nix::sys::stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    if existing.as_ref().map(kind_of) == Some(FileKind::Directory) {
        return Err(FileError::new(
            FileErrorCode::IsDirectory,
            format!(
                "`{}` is a directory: upload into it by naming the file inside",
                target.display
            ),
        ));
    }
    let mode = request.mode.unwrap_or_else(|| match &existing {
        Some(st) if kind_of(st) == FileKind::File => st.st_mode & 0o7777,
        _ => DEFAULT_FILE_MODE,
    }) & 0o7777;
    let temp = Temp {
        dir: &parent,
        name: temp_name(),
        armed: true,
    };
    let fd = nix::fcntl::openat(
        &parent,
        temp.name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| errno(e, &target.display))?;
    out.reply(Reply::default())?;
    let mut file = std::fs::File::from(fd);
    let mut upload = Upload::new(input, request.max_bytes);
    while let Some(chunk) = upload.next_chunk()? {
        file.write_all(&chunk).map_err(|e| io_error(&e, &target.display))?;
    }
    nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).map_err(|e| errno(e, &target.display))?;
    drop(file);
    nix::fcntl::renameat(&parent, temp.name.as_str(), &parent, name).map_err(|e| errno(e, &target.display))?;
    let mut temp = temp;
    temp.armed = false;
    Ok(Summary {
        bytes: upload.bytes,
        entries: 1,
        ..Summary::default()
    })
}

/// The plain names of a tar entry's path; `..`, absolute paths and the like are refused.
fn entry_parts(path: &Path) -> Result<Vec<&OsStr>, FileError> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(Ok(part)),
            Component::CurDir => None,
            _ => Some(Err(FileError::new(
                FileErrorCode::Forbidden,
                format!("the archive's entry `{}` leaves its directory", path.display()),
            ))),
        })
        .collect()
}

/// Opens (creating what is missing) the directory `parts` below `dest`, one component at a time
/// with `O_NOFOLLOW`: a symlink on the way is refused, never followed.
fn dir_below(dest: &OwnedFd, parts: &[&OsStr], shown: &str) -> Result<OwnedFd, FileError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut current = nix::fcntl::openat(dest, ".", flags, Mode::empty()).map_err(|e| errno(e, shown))?;
    for part in parts {
        match nix::sys::stat::mkdirat(&current, *part, Mode::from_bits_truncate(DEFAULT_DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno(e, shown)),
        }
        current = nix::fcntl::openat(&current, *part, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOTDIR | Errno::ELOOP => FileError::new(
                FileErrorCode::Forbidden,
                format!("`{shown}` would be written through a symlink or over a file"),
            ),
            e => errno(e, shown),
        })?;
    }
    Ok(current)
}

/// `fs_write` with `archive`: unpacks a tar stream into a directory (created when missing), modes
/// and times kept. Entries are confined to it: `..` and absolute names are refused, no symlink on
/// the way is followed, a name already there is replaced (a link, never written through), and hard
/// links and device nodes are refused.
fn unpack(
    request: &WriteRequest,
    home: &str,
    input: &mut mpsc::Receiver<Input>,
    out: &mut Out,
) -> Result<Summary, FileError> {
    let target = resolve(&request.path, home)?;
    let root = open_root(target.root)?;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let dest = match beneath(&root, &target.rel, dir_flags, Mode::empty()) {
        Ok(dest) => dest,
        Err(Errno::ENOENT) => {
            let (parent_rel, name) = target.split().ok_or_else(|| errno(Errno::ENOENT, &target.display))?;
            let parent = beneath(&root, parent_rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| errno(e, &target.display))?;
            match nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(DEFAULT_DIR_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e, &target.display)),
            }
            nix::fcntl::openat(
                &parent,
                name,
                dir_flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno(e, &target.display))?
        }
        Err(e) => return Err(errno(e, &target.display)),
    };
    out.reply(Reply::default())?;
    let mut upload = Upload::new(input, request.max_bytes);
    let result = unpack_entries(&dest, &target.display, &mut upload);
    let entries = match result {
        Ok(entries) => entries,
        Err(error) => return Err(upload.stop.take().unwrap_or(error)),
    };
    upload.drain()?;
    Ok(Summary {
        bytes: upload.bytes,
        entries,
        ..Summary::default()
    })
}

fn unpack_entries(dest: &OwnedFd, display: &str, upload: &mut Upload<'_>) -> Result<u64, FileError> {
    let mut archive = tar::Archive::new(upload);
    let mut count = 0;
    // Directory modes are set last, deepest first, so a read-only one does not stop its contents.
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let bad = |e: io::Error| FileError::new(FileErrorCode::Invalid, format!("the tar archive is malformed: {e}"));
    for item in archive.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        let path = item.path().map_err(bad)?.into_owned();
        let parts = entry_parts(&path)?;
        let shown = join(display, &path.to_string_lossy());
        let Some((name, above)) = parts.split_last() else {
            continue;
        };
        if parts.len() > MAX_DEPTH {
            return Err(FileError::new(
                FileErrorCode::Invalid,
                format!("`{shown}` is nested too deep"),
            ));
        }
        let header = item.header();
        let mode = header.mode().unwrap_or(DEFAULT_FILE_MODE) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let parent = dir_below(dest, above, &shown)?;
        match kind {
            tar::EntryType::Directory => {
                dir_below(&parent, &[*name], &shown)?;
                dir_modes.push((parts.iter().collect(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                replace(&parent, name, &shown)?;
                let fd = nix::fcntl::openat(
                    &parent,
                    *name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| errno(e, &shown))?;
                let mut file = std::fs::File::from(fd);
                io::copy(&mut item, &mut file).map_err(|e| io_error(&e, &shown))?;
                nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).map_err(|e| errno(e, &shown))?;
                let time = nix::sys::time::TimeSpec::new(mtime as i64, 0);
                let _ = nix::sys::stat::futimens(&file, &time, &time);
            }
            tar::EntryType::Symlink => {
                let link = item
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| FileError::new(FileErrorCode::Invalid, format!("`{shown}` is a link to nothing")))?
                    .into_owned();
                replace(&parent, name, &shown)?;
                nix::unistd::symlinkat(&link, &parent, *name).map_err(|e| errno(e, &shown))?;
            }
            other => {
                return Err(FileError::new(
                    FileErrorCode::Invalid,
                    format!("`{shown}` is a {other:?} entry: archives may hold files, directories and symlinks only"),
                ));
            }
        }
        count += 1;
    }
    dir_modes.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode) in dir_modes {
        let parts: Vec<&OsStr> = path.iter().collect();
        let shown = join(display, &path.to_string_lossy());
        let dir = dir_below(dest, &parts, &shown)?;
        let dir = nix::fcntl::openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno(e, &shown))?;
        nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(mode)).map_err(|e| errno(e, &shown))?;
    }
    Ok(count)
}

/// Removes what is at `name` unless it is a directory, so an entry can take its place.
fn replace(parent: &OwnedFd, name: &OsStr, shown: &str) -> Result<(), FileError> {
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => Err(FileError::new(
            FileErrorCode::IsDirectory,
            format!("`{shown}` is a directory in the way of a file"),
        )),
        Err(e) => Err(errno(e, shown)),
    }
}

/// `fs_delete`.
fn delete(request: &DeleteRequest, home: &str, out: &mut Out) -> Result<Summary, FileError> {
    let target = resolve(&request.path, home)?;
    let (parent_rel, name) = target.split().ok_or_else(|| {
        FileError::new(
            FileErrorCode::Forbidden,
            format!("`{}` itself cannot be deleted", target.display),
        )
    })?;
    let root = open_root(target.root)?;
    let parent = beneath(&root, parent_rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| errno(e, &target.display))?;
    let st =
        nix::sys::stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| errno(e, &target.display))?;
    let entries = if kind_of(&st) == FileKind::Directory {
        if request.recursive {
            remove_tree(&parent, name, &target.display, 0)?
        } else {
            nix::unistd::unlinkat(&parent, name, UnlinkatFlags::RemoveDir).map_err(|e| match e {
                Errno::ENOTEMPTY | Errno::EEXIST => FileError::new(
                    FileErrorCode::Conflict,
                    format!(
                        "`{}` is a directory that is not empty: delete it recursively",
                        target.display
                    ),
                ),
                e => errno(e, &target.display),
            })?;
            1
        }
    } else {
        nix::unistd::unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| errno(e, &target.display))?;
        1
    };
    out.reply(Reply::default())?;
    Ok(Summary {
        entries,
        ..Summary::default()
    })
}

/// Removes directory `name` in `parent` and everything below it, by descriptor, links as links.
fn remove_tree(parent: &OwnedFd, name: &OsStr, shown: &str, depth: usize) -> Result<u64, FileError> {
    if depth > MAX_DEPTH {
        return Err(FileError::new(
            FileErrorCode::Invalid,
            format!("`{shown}` is nested too deep"),
        ));
    }
    let dir = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(e, shown))?;
    let mut count = 0;
    for child in names(&dir).map_err(|e| errno(e, shown))? {
        let child_shown = join(shown, &child.to_string_lossy());
        let Ok(st) = nix::sys::stat::fstatat(&dir, child.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if kind_of(&st) == FileKind::Directory {
            count += remove_tree(&dir, &child, &child_shown, depth + 1)?;
        } else {
            match nix::unistd::unlinkat(&dir, child.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => count += 1,
                Err(e) => return Err(errno(e, &child_shown)),
            }
        }
    }
    nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| errno(e, shown))?;
    Ok(count + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/work/home";

    #[test]
    fn paths_are_confined_to_work_and_tmp_as_text() {
        let ok = resolve("/work/a/./b", HOME).unwrap();
        assert_eq!(
            (ok.root, ok.rel.as_path(), ok.display.as_str()),
            ("/work", Path::new("a/b"), "/work/a/b")
        );
        let rel = resolve("notes.txt", HOME).unwrap();
        assert_eq!(rel.display, "/work/home/notes.txt");
        assert_eq!(resolve("//tmp//x", HOME).unwrap().display, "/tmp/x");
        assert_eq!(resolve("/work", HOME).unwrap().rel, PathBuf::new());
        for bad in [
            "/etc/passwd",
            "/",
            "/work/../etc",
            "../../etc/shadow",
            "/workspace/x",
            "/proc/1/root",
        ] {
            let err = resolve(bad, HOME).unwrap_err();
            assert_eq!(err.code, FileErrorCode::Forbidden, "{bad}: {err}");
        }
        assert_eq!(resolve("", HOME).unwrap_err().code, FileErrorCode::Invalid);
        assert_eq!(resolve("/work/a\0b", HOME).unwrap_err().code, FileErrorCode::Invalid);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |start, end| ByteRange { start, end };
        assert_eq!(range_in(r(Some(0), Some(9)), 100), Some((0, 10)));
        assert_eq!(range_in(r(Some(90), None), 100), Some((90, 10)));
        assert_eq!(range_in(r(Some(90), Some(1000)), 100), Some((90, 10)));
        assert_eq!(range_in(r(None, Some(5)), 100), Some((95, 5)));
        assert_eq!(range_in(r(None, Some(500)), 100), Some((0, 100)));
        assert_eq!(range_in(r(Some(100), None), 100), None);
        assert_eq!(range_in(r(None, Some(0)), 100), None);
        assert_eq!(range_in(r(Some(0), None), 0), None);
        assert_eq!(range_in(r(Some(5), Some(4)), 100), None);
    }

    /// A directory tree with an escape planted in it, opened both ways.
    #[test]
    fn beneath_and_walk_refuse_symlinks_that_leave_and_walk_refuses_all() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("inside")).unwrap();
        std::fs::write(base.join("inside/file"), b"ok").unwrap();
        std::os::unix::fs::symlink("/etc", base.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", base.join("inside/up")).unwrap();
        std::os::unix::fs::symlink("file", base.join("inside/near")).unwrap();
        let root = nix::fcntl::open(base, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let open = |rel: &str| beneath(&root, Path::new(rel), OFlag::O_RDONLY, Mode::empty());
        assert!(open("inside/file").is_ok());
        assert!(open("inside/near").is_ok(), "a link that stays inside is followed");
        assert!(open("abs/passwd").is_err());
        assert!(open("inside/up/etc/passwd").is_err());
        let walked = |rel: &str| walk(&root, Path::new(rel), OFlag::O_RDONLY, Mode::empty());
        assert!(walked("inside/file").is_ok());
        assert!(walked("inside/near").is_err());
        assert!(walked("abs/passwd").is_err());
        assert!(walked("inside/up/etc/passwd").is_err());
    }

    #[test]
    fn tar_entries_that_leave_their_directory_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../b"] {
            assert_eq!(
                entry_parts(Path::new(bad)).unwrap_err().code,
                FileErrorCode::Forbidden,
                "{bad}"
            );
        }
        assert_eq!(
            entry_parts(Path::new("./a/b")).unwrap(),
            vec![OsStr::new("a"), OsStr::new("b")]
        );
    }
}
