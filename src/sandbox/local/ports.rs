//! A sandbox's own TCP ports, reached through its harness: the `connect` and `ports` ops of the
//! harness protocol ([`crate::wire::harness`]), both ends.
//!
//! `{"op":"connect","port":N}`: the harness opens one loopback connection to its sandbox's
//! `127.0.0.1:N` (falling back to `[::1]:N` when nothing listens on the IPv4 loopback), answers one
//! JSON line, `{}` or `{"error":"…"}`, and from then on the harness connection *is* that TCP
//! connection: raw bytes both ways, no framing, each direction's end (EOF) passed on as a
//! half-close, until both ends are closed. `{"op":"ports"}`: the harness answers one JSON line,
//! [`PortsReply`]: the TCP ports listening in its network namespace, read from `/proc/net/tcp` and
//! `/proc/net/tcp6`.
//!
//! Invariants: nothing is opened but a loopback connection inside the sandbox per forwarded
//! connection — the sandbox keeps having no network of its own; the ports the harness and the
//! sandbox's vault use themselves (the egress proxy, the pod's harness and vault admin ports) are
//! neither listed nor reachable ([`Reserved`]). A connection opened here carries whatever the
//! sandbox's program answers: hostile content, for the control plane to keep off its own origin.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::wire::harness::{self as proto, ProtoError, Request};
use crate::wire::ports::{ConnectReply, ConnectRequest, ListeningPort, PortsReply};

/// How long the harness waits for the sandbox's loopback to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the harness's answer to `connect` or `ports`.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes buffered each way while splicing.
const SPLICE_BUFFER: usize = 64 * 1024;
/// Where the kernel lists the network namespace's TCP sockets.
const PROC_NET_TCP: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];
/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Ports of the sandbox that belong to `lap` itself, never listed nor forwarded.
#[derive(Debug, Clone, Default)]
pub struct Reserved(pub Vec<u16>);

impl Reserved {
    fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }
}

// ---- harness side ----

/// Serves `connect`: dials the sandbox's loopback and splices it with the harness connection.
pub async fn serve_connect<R, W>(
    rd: BufReader<R>,
    mut wr: W,
    request: ConnectRequest,
    reserved: &Reserved,
) -> Result<(), ProtoError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let dialed = if request.port == 0 {
        Err("port 0 is not a port one can connect to".to_owned())
    } else if reserved.contains(request.port) {
        Err(format!(
            "port {} belongs to lap itself inside the sandbox (egress proxy or harness)",
            request.port
        ))
    } else {
        dial_loopback(request.port).await
    };
    let tcp = match dialed {
        Ok(tcp) => tcp,
        Err(error) => return write_json(&mut wr, &ConnectReply { error: Some(error) }).await,
    };
    write_json(&mut wr, &ConnectReply::default()).await?;
    let (tcp_rd, tcp_wr) = tcp.into_split();
    splice(rd, wr, tcp_rd, tcp_wr).await;
    Ok(())
}

/// Connects to `127.0.0.1:port`, else `[::1]:port`, in this process's network namespace.
async fn dial_loopback(port: u16) -> Result<tokio::net::TcpStream, String> {
    let mut last = String::new();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => last = format!("nothing accepts connections on {addr} in the sandbox: {err}"),
            Err(_) => last = format!("{addr} in the sandbox did not accept within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// Copies both ways until both directions have ended; each EOF becomes a half-close of the other
/// side's write half.
pub async fn splice<R1, W1, R2, W2>(a_rd: R1, mut a_wr: W1, b_rd: R2, mut b_wr: W2)
where
    R1: AsyncRead + Unpin,
    W1: AsyncWrite + Unpin,
    R2: AsyncRead + Unpin,
    W2: AsyncWrite + Unpin,
{
    let a_to_b = async {
        let mut a_rd = BufReader::with_capacity(SPLICE_BUFFER, a_rd);
        let _ = tokio::io::copy_buf(&mut a_rd, &mut b_wr).await;
        let _ = b_wr.shutdown().await;
    };
    let b_to_a = async {
        let mut b_rd = BufReader::with_capacity(SPLICE_BUFFER, b_rd);
        let _ = tokio::io::copy_buf(&mut b_rd, &mut a_wr).await;
        let _ = a_wr.shutdown().await;
    };
    tokio::join!(a_to_b, b_to_a);
}

/// Serves `ports`: the listening TCP ports of this network namespace, but the reserved ones.
pub async fn serve_ports<W: AsyncWrite + Unpin>(mut wr: W, reserved: &Reserved) -> Result<(), ProtoError> {
    let reply = match listening(reserved) {
        Ok(ports) => PortsReply { ports, error: None },
        Err(err) => PortsReply {
            ports: Vec::new(),
            error: Some(format!("cannot read the sandbox's sockets: {err}")),
        },
    };
    write_json(&mut wr, &reply).await
}

/// Reads `/proc/net/tcp{,6}` (of the reading process's network namespace).
fn listening(reserved: &Reserved) -> std::io::Result<Vec<ListeningPort>> {
    let mut ports = Vec::new();
    for path in PROC_NET_TCP {
        match std::fs::read_to_string(path) {
            Ok(table) => ports.extend(parse_proc_net_tcp(&table)),
            // A kernel without IPv6 has no `tcp6`.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && path.ends_with('6') => {}
            Err(err) => return Err(err),
        }
    }
    ports.retain(|p| !reserved.contains(p.port));
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// The listening sockets of one `/proc/net/tcp` or `/proc/net/tcp6` table that a connection to
/// the loopback can reach (bound to a loopback or wildcard address).
pub fn parse_proc_net_tcp(table: &str) -> Vec<ListeningPort> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = parse_hex_address(addr)?;
            let reachable = ip.is_loopback()
                || ip.is_unspecified()
                || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_unspecified()));
            reachable.then(|| ListeningPort {
                port,
                address: ip.to_string(),
            })
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in the host's byte order, in hex.
fn parse_hex_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let chunk = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(chunk, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(wr: &mut W, value: &T) -> Result<(), ProtoError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ProtoError::Protocol(e.to_string()))?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    wr.flush().await?;
    Ok(())
}

// ---- client side (every backend: a Unix socket, a port-forward, a pod's TCP) ----

/// A connection to a port inside a sandbox.
pub trait PortStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PortStream for T {}

/// Why a port of a sandbox could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The harness answered: nothing listens there, or the port is lap's own.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("the harness did not answer within {0:?}")]
    Timeout(Duration),
}

/// A port the harness could not reach, as the backend's error.
pub fn port_error(err: PortError) -> crate::sandbox::SandboxError {
    crate::sandbox::SandboxError::Backend(format!("the sandbox's port: {err}"))
}

/// Sends `connect` on a fresh harness connection and waits for the answer: on success the returned
/// stream is the TCP connection to the sandbox's `127.0.0.1:port`.
pub async fn open<S: PortStream>(stream: S, port: u16) -> Result<Box<dyn PortStream>, PortError> {
    let mut stream = BufReader::new(stream);
    proto::write_request(stream.get_mut(), &Request::Connect(ConnectRequest { port })).await?;
    let reply: ConnectReply = tokio::time::timeout(REPLY_TIMEOUT, read_reply(&mut stream))
        .await
        .map_err(|_| PortError::Timeout(REPLY_TIMEOUT))??;
    match reply.error {
        // The reader's buffer may already hold the sandbox's first bytes: it stays in front.
        None => Ok(Box::new(stream)),
        Some(error) => Err(PortError::Refused(error)),
    }
}

/// Sends `ports` on a fresh harness connection.
pub async fn list<S: PortStream>(stream: S) -> Result<Vec<ListeningPort>, PortError> {
    let mut stream = BufReader::new(stream);
    proto::write_request(stream.get_mut(), &Request::Ports).await?;
    let reply: PortsReply = tokio::time::timeout(REPLY_TIMEOUT, read_reply(&mut stream))
        .await
        .map_err(|_| PortError::Timeout(REPLY_TIMEOUT))??;
    match reply.error {
        None => Ok(reply.ports),
        Some(error) => Err(PortError::Refused(error)),
    }
}

/// Reads the one reply line byte by byte, so nothing after it is consumed.
async fn read_reply<T: for<'de> Deserialize<'de>, S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
) -> Result<T, ProtoError> {
    let mut line = Vec::new();
    loop {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProtoError::Protocol("the harness closed before its answer".into()));
            }
            Err(err) => return Err(err.into()),
        };
        if byte == b'\n' {
            break;
        }
        if line.len() >= proto::MAX_REQUEST_LINE {
            return Err(ProtoError::Protocol("answer line too long".into()));
        }
        line.push(byte);
    }
    // A harness that knows no such op answers with an error frame, not JSON.
    serde_json::from_slice(&line).map_err(|_| {
        ProtoError::Protocol("the harness does not know this op (is it older than this lap serve?)".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0200000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000
";

    #[test]
    fn only_listening_sockets_the_loopback_reaches_are_listed() {
        // Little-endian hosts print 127.0.0.1 as 0100007F.
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_net_tcp(TCP),
                vec![
                    ListeningPort {
                        port: 8000,
                        address: "127.0.0.1".into()
                    },
                    ListeningPort {
                        port: 3000,
                        address: "0.0.0.0".into()
                    },
                ]
            );
            assert_eq!(
                parse_proc_net_tcp(TCP6),
                vec![
                    ListeningPort {
                        port: 8080,
                        address: "::1".into()
                    },
                    ListeningPort {
                        port: 9000,
                        address: "::".into()
                    },
                ]
            );
        }
        assert!(parse_proc_net_tcp("header only\n").is_empty());
        assert!(parse_proc_net_tcp("h\n 0: zz:1 0 0A\n").is_empty());
    }

    #[tokio::test]
    async fn connect_splices_a_loopback_connection_and_refuses_reserved_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(b"hello first\n").await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got).await.unwrap();
        });
        let serve = |request: ConnectRequest, reserved: Reserved| {
            let (client, server) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let (rd, wr) = tokio::io::split(server);
                let mut rd = BufReader::new(rd);
                let Ok(Request::Connect(asked)) = proto::read_line_json::<Request, _>(&mut rd).await else {
                    panic!("not a connect request");
                };
                assert_eq!(asked, request);
                serve_connect(rd, wr, asked, &reserved).await.unwrap();
            });
            client
        };
        let mut conn = open(serve(ConnectRequest { port }, Reserved(vec![3128])), port)
            .await
            .unwrap();
        let mut first = [0u8; 12];
        conn.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"hello first\n");
        conn.write_all(b"echo me").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"echo me");

        let refused = open(serve(ConnectRequest { port: 3128 }, Reserved(vec![3128])), 3128).await;
        assert!(matches!(refused, Err(PortError::Refused(m)) if m.contains("belongs to lap")));
    }
}
