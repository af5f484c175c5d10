//! `lap cp SRC DST`: copies a file or a directory into or out of a session's sandbox, like
//! `kubectl cp`. One side is `SESSION:PATH` (a path in the sandbox: absolute under `/work` or `/tmp`,
//! or relative to the sandbox user's home `/work/home`), the other a local path. A directory travels
//! as a tar stream, modes and times kept, links as links; when the destination is an existing
//! directory, the copy goes inside it under the source's name (as `cp -r` does).
//!
//! Everything streams: neither this process nor `lap serve` holds a whole file. Progress shows on a
//! terminal (indicatif), never when stderr is piped or with `--quiet`. What comes out of a sandbox is
//! hostile: a tar stream from it is unpacked by the `tar` crate's `unpack`, which refuses entries
//! that would land outside the destination (`..`, absolute names, links on the way).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Ctx;
use crate::client::{Client, ClientError};
use crate::error::Error;
use crate::output::Printer;
use crate::wire::files::{FileKind, parse_mode};

/// Bytes read from a local file per chunk of an upload.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Chunks buffered between the tar thread and the connection.
const TAR_QUEUE: usize = 16;

#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  lap cp ./data.csv 1b4e…:/work/data.csv\n  lap cp 1b4e…:/work/repo/out ./out\n  \
                        lap cp ./src 1b4e…:/tmp   (a directory; it lands in /tmp/src)"
)]
pub struct Args {
    /// What to copy: a local path, or `SESSION:PATH` in a session's sandbox
    pub source: String,
    /// Where to: a local path, or `SESSION:PATH` (an existing directory receives the copy inside it)
    pub destination: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { session: String, path: String },
}

/// `SESSION:PATH` or a local path. As with `kubectl cp`, a local path whose first `/` comes after a
/// `:` must be written `./…` (or absolute).
pub fn parse_location(arg: &str) -> Location {
    // An absolute path of this system (`/…`, or `C:\…` on Windows) is never `SESSION:PATH`.
    if arg.starts_with('/') || arg.starts_with('.') || Path::new(arg).is_absolute() {
        return Location::Local(PathBuf::from(arg));
    }
    match arg.split_once(':') {
        Some((session, path)) if !session.is_empty() && !session.contains('/') => Location::Remote {
            session: session.to_owned(),
            path: if path.is_empty() {
                ".".to_owned()
            } else {
                path.to_owned()
            },
        },
        _ => Location::Local(PathBuf::from(arg)),
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Copied {
    source: String,
    destination: String,
    #[serde(rename = "type")]
    kind: FileKind,
    bytes: u64,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    let copied = match (parse_location(&args.source), parse_location(&args.destination)) {
        (Location::Remote { session, path }, Location::Local(local)) => {
            download(&client, &ctx.out, &session, &path, &local).await?
        }
        (Location::Local(local), Location::Remote { session, path }) => {
            upload(&client, &ctx.out, &local, &session, &path).await?
        }
        (Location::Remote { .. }, Location::Remote { .. }) => {
            return Err(Error::usage(
                "both sides of `lap cp` are in sandboxes",
                "copy to a local path first, then from it into the other session",
            ));
        }
        (Location::Local(_), Location::Local(_)) => {
            return Err(Error::usage(
                "neither side of `lap cp` is in a sandbox",
                "name the sandbox side as `SESSION:PATH`, e.g. `lap cp ./file 1b4e…:/work/file`",
            ));
        }
    };
    if ctx.out.json {
        ctx.out.json(&copied);
    } else {
        ctx.out.status(format!(
            "copied {} ({}) to {}",
            copied.source,
            human_bytes(copied.bytes),
            copied.destination
        ));
    }
    Ok(())
}

/// A progress bar on a terminal; hidden when stderr is not one, or with `--quiet`.
fn progress(out: &Printer, total: Option<u64>, label: String) -> ProgressBar {
    if out.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec}").expect("template"),
            );
            bar
        }
    };
    bar.set_message(label);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn net_error(context: &str) -> impl Fn(reqwest::Error) -> Error + '_ {
    move |e| Error::failed(format!("{context}: {}", crate::error::chain(&e)))
}

/// Copies `session:path` to `local`.
async fn download(client: &Client, out: &Printer, session: &str, path: &str, local: &Path) -> Result<Copied, Error> {
    let entry = client.stat_file(session, path).await?;
    let dest = if local.is_dir() {
        local.join(&entry.name)
    } else {
        local.to_owned()
    };
    let source = format!("{session}:{}", entry.path);
    let destination = dest.display().to_string();
    let mut resp = client
        .download_file(session, &entry.path, entry.kind == FileKind::Directory)
        .await?;
    if entry.kind == FileKind::Directory {
        let bar = progress(out, None, format!("{source} →"));
        std::fs::create_dir_all(&dest).map_err(|e| Error::io(format!("cannot create `{destination}`"), e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(TAR_QUEUE);
        let unpack_dest = dest.clone();
        let unpacking = tokio::task::spawn_blocking(move || {
            let mut archive = tar::Archive::new(ChannelReader::new(rx));
            archive.set_preserve_mtime(true);
            archive.unpack(&unpack_dest)
        });
        let mut bytes = 0u64;
        let received = async {
            while let Some(chunk) = resp.chunk().await.map_err(net_error("the download broke off"))? {
                bytes += chunk.len() as u64;
                bar.set_position(bytes);
                if tx.send(chunk.to_vec()).await.is_err() {
                    break;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        drop(tx);
        let unpacked = unpacking
            .await
            .map_err(|e| Error::failed(format!("the unpacking thread failed: {e}")))?;
        bar.finish_and_clear();
        received?;
        unpacked.map_err(|e| Error::io(format!("cannot unpack into `{destination}`"), e))?;
        return Ok(Copied {
            source,
            destination,
            kind: entry.kind,
            bytes,
        });
    }
    let bar = progress(out, resp.content_length(), format!("{source} →"));
    let mut file = tokio::fs::File::create(&dest)
        .await
        .map_err(|e| Error::io(format!("cannot write `{destination}`"), e))?;
    let mut bytes = 0u64;
    let received = async {
        while let Some(chunk) = resp.chunk().await.map_err(net_error("the download broke off"))? {
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("cannot write `{destination}`"), e))?;
            bytes += chunk.len() as u64;
            bar.set_position(bytes);
        }
        file.flush()
            .await
            .map_err(|e| Error::io(format!("cannot write `{destination}`"), e))?;
        Ok::<_, Error>(())
    }
    .await;
    bar.finish_and_clear();
    received?;
    if let Some(mode) = parse_mode(&entry.mode) {
        let _ = crate::platform::set_mode(&dest, mode & 0o777);
    }
    Ok(Copied {
        source,
        destination,
        kind: entry.kind,
        bytes,
    })
}

/// Copies `local` to `session:path`.
async fn upload(client: &Client, out: &Printer, local: &Path, session: &str, path: &str) -> Result<Copied, Error> {
    let shown = local.display().to_string();
    let meta = std::fs::metadata(local).map_err(|e| Error::io(format!("cannot read `{shown}`"), e))?;
    let name = std::fs::canonicalize(local)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| {
            Error::usage(
                format!("`{shown}` has no name to copy under"),
                "name a file or directory",
            )
        })?;
    let remote = match client.stat_file(session, path).await {
        Ok(entry) if entry.kind == FileKind::Directory => format!("{}/{name}", entry.path.trim_end_matches('/')),
        Ok(entry) => entry.path,
        Err(ClientError::Api { status: 404, .. }) => path.to_owned(),
        Err(err) => return Err(err.into()),
    };
    let destination = format!("{session}:{remote}");
    let label = format!("{shown} →");
    if meta.is_dir() {
        let bar = progress(out, None, label);
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(TAR_QUEUE);
        let source = local.to_owned();
        let packing = tokio::task::spawn_blocking(move || {
            let sink = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(UPLOAD_CHUNK),
            };
            let mut builder = tar::Builder::new(sink);
            builder.follow_symlinks(false);
            let packed = builder
                .append_dir_all(".", &source)
                .and_then(|()| builder.into_inner())
                .and_then(|mut sink| std::io::Write::flush(&mut sink));
            if let Err(err) = packed {
                let _ = tx.blocking_send(Err(err));
            }
        });
        let counted = bar.clone();
        let stream = futures_util::stream::unfold(rx, move |mut rx| {
            let counted = counted.clone();
            async move {
                let item = rx.recv().await?;
                if let Ok(chunk) = &item {
                    counted.inc(chunk.len() as u64);
                }
                Some((item, rx))
            }
        });
        let uploaded = client
            .upload_file(session, &remote, true, None, None, reqwest::Body::wrap_stream(stream))
            .await;
        let _ = packing.await;
        bar.finish_and_clear();
        let uploaded = uploaded?;
        return Ok(Copied {
            source: shown,
            destination,
            kind: FileKind::Directory,
            bytes: uploaded.bytes,
        });
    }
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|e| Error::io(format!("cannot read `{shown}`"), e))?;
    let bar = progress(out, Some(meta.len()), label);
    let counted = bar.clone();
    let stream = futures_util::stream::unfold(file, move |mut file| {
        let counted = counted.clone();
        async move {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    counted.inc(n as u64);
                    Some((Ok::<_, std::io::Error>(buf), file))
                }
                Err(err) => Some((Err(err), file)),
            }
        }
    });
    let mode = crate::platform::mode(&meta).map(|mode| mode & 0o777);
    let uploaded = client
        .upload_file(
            session,
            &remote,
            false,
            mode,
            Some(meta.len()),
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    bar.finish_and_clear();
    let uploaded = uploaded?;
    Ok(Copied {
        source: shown,
        destination,
        kind: FileKind::File,
        bytes: uploaded.bytes,
    })
}

/// A blocking `Read` over the chunks of an async channel (for the `tar` crate, on its own thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking `Write` that sends chunks of [`UPLOAD_CHUNK`] bytes down an async channel.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(UPLOAD_CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_session_colon_path_or_local_like_kubectl_cp() {
        let remote = |s: &str, p: &str| Location::Remote {
            session: s.into(),
            path: p.into(),
        };
        assert_eq!(parse_location("abc:/work/x"), remote("abc", "/work/x"));
        assert_eq!(parse_location("abc:notes.txt"), remote("abc", "notes.txt"));
        assert_eq!(parse_location("abc:"), remote("abc", "."));
        assert_eq!(parse_location("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(parse_location("/tmp/a:b"), Location::Local("/tmp/a:b".into()));
        assert_eq!(parse_location("dir/a:b"), Location::Local("dir/a:b".into()));
        assert_eq!(parse_location("file.txt"), Location::Local("file.txt".into()));
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
