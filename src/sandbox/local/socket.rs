//! The local end of a sandbox's `harness.sock`: dialing it, and taking the egress proxy's listener
//! over it (the `proxy_listener` op of [`crate::wire::harness`], which only a Unix socket can carry).
//! Every other request goes through the backends' shared client, [`crate::sandbox::harness`].

use std::path::Path;

use tokio::net::UnixStream;

use super::layout::HARNESS_SOCKET;
use crate::wire::harness::{PROXY_LISTENER_BYTE, ProtoError, Request, write_request};

/// Dials `harness.sock` in a sandbox's `run/` directory. The directory is opened first and the socket
/// reached through `/proc/self/fd/N/`, so a long data dir cannot overflow `sun_path` (108 bytes).
pub async fn connect(run_dir: &Path) -> Result<UnixStream, ProtoError> {
    let dir = std::fs::File::open(run_dir).map_err(ProtoError::Connect)?;
    let path = format!(
        "/proc/self/fd/{}/{HARNESS_SOCKET}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    let stream = UnixStream::connect(&path).await.map_err(ProtoError::Connect);
    drop(dir);
    stream
}

/// Takes the sandbox's proxy listener from its harness (a duplicate: the harness keeps its own, to
/// hand over again after a restart of `lap serve`).
pub async fn proxy_listener(run_dir: &Path) -> Result<std::net::TcpListener, ProtoError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut stream = connect(run_dir).await?;
    write_request(&mut stream, &Request::ProxyListener).await?;
    let fd = loop {
        stream.readable().await?;
        let received = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [std::io::IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    fds.extend(received);
                }
            }
            Ok((msg.bytes, byte[0], fds))
        });
        match received {
            Ok((1, PROXY_LISTENER_BYTE, fds)) if fds.len() == 1 => break fds[0],
            Ok((0, _, _)) => return Err(ProtoError::Protocol("the harness closed without the listener".into())),
            Ok((_, _, fds)) => {
                for fd in fds {
                    // SAFETY: a descriptor just received is ours alone; closing it is all we do.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                return Err(ProtoError::Protocol("an unexpected proxy listener message".into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: the descriptor was just installed in our table by SCM_RIGHTS; nothing else owns it.
    let listener = std::net::TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(listener)
}
