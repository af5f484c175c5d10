//! `lap port-forward SESSION [LOCAL:]PORT…` (like `kubectl port-forward`), and `lap sessions
//! ports` / `lap sessions url`: a session's ports from the terminal.
//!
//! Port-forward listens locally (loopback by default) and carries each accepted connection to the
//! sandbox's own `127.0.0.1:PORT` over one WebSocket through `lap serve` and the sandbox's harness
//! ([`crate::client::Client::connect_port_forward`]): nothing is opened inside the sandbox but a
//! loopback connection per forwarded connection. It prints where it listens, one line per port on
//! stdout (`Forwarding from 127.0.0.1:8080 -> 8000`), and runs until interrupted. A connection that
//! cannot be carried (nothing listens there, the session ended) is closed and said on stderr; the
//! others go on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{Client, ForwardSocket};
use crate::error::Error;
use crate::wire::ports::{CreatePreviewUrl, DEFAULT_PREVIEW_TTL_SECS};

/// Bytes read from a local connection per WebSocket message (the server's message limit).
const CHUNK: usize = 64 * 1024;

/// `[LOCAL:]PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The local port (0: any free one).
    pub local: u16,
    /// The sandbox's port.
    pub remote: u16,
}

impl FromStr for Mapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str, what: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("`{p}` is not a {what} port (0-65535)"))
        };
        let (local, remote) = match s.split_once(':') {
            Some((local, remote)) => (port(local, "local")?, port(remote, "sandbox")?),
            None => {
                let p = port(s, "sandbox")?;
                (p, p)
            }
        };
        if remote == 0 {
            return Err("the sandbox port cannot be 0".into());
        }
        Ok(Self { local, remote })
    }
}

/// Forward local ports to a session's sandbox, like `kubectl port-forward`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session id
    pub session: String,
    /// `[LOCAL:]PORT`: listen on LOCAL (default: the same number; 0: any free port) and carry each
    /// connection to the sandbox's 127.0.0.1:PORT; several may be given
    #[arg(required = true, value_name = "[LOCAL:]PORT")]
    pub ports: Vec<Mapping>,
    /// Local address to listen on
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_name = "ADDR")]
    pub address: IpAddr,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    // A clear error now for a session that does not exist, rather than one per connection.
    client.get_session(&args.session).await?;
    let mut listeners = Vec::new();
    for mapping in &args.ports {
        let addr = SocketAddr::new(args.address, mapping.local);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        if ctx.out.json {
            ctx.out.line(
                serde_json::json!({"session_id": args.session, "local": local.to_string(), "port": mapping.remote})
                    .to_string(),
            );
        } else {
            ctx.out.line(format!("Forwarding from {local} -> {}", mapping.remote));
        }
        listeners.push((listener, mapping.remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let (client, session) = (client.clone(), args.session.clone());
        tasks.spawn(accept_loop(listener, client, session, remote));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Err(err)) => Err(err),
            _ => Ok(()),
        },
    }
}

/// Accepts local connections until the listener fails.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    client: Client,
    session: String,
    port: u16,
) -> Result<(), Error> {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // `EMFILE` and the like pass: rest, then accept again.
                eprintln!("warning: accepting a local connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let (client, session) = (client.clone(), session.clone());
        tokio::spawn(async move {
            match client.connect_port_forward(&session, port).await {
                Ok(socket) => relay(conn, socket).await,
                Err(err) => {
                    let hint = err.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default();
                    eprintln!("warning: cannot carry the connection from {peer} to port {port}: {err}{hint}");
                }
            }
        });
    }
}

/// Carries one local connection over its WebSocket until both directions have ended.
async fn relay(conn: tokio::net::TcpStream, socket: ForwardSocket) {
    let (mut rd, mut wr) = conn.into_split();
    let (mut sink, mut stream) = socket.split();
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            // An empty message is this direction's end.
            if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() || n == 0 {
                break;
            }
        }
        sink
    };
    let down = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(data) if data.is_empty() => break,
                Message::Binary(data) if wr.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
        stream
    };
    let (mut sink, _stream) = tokio::join!(up, down);
    let _ = sink.close().await;
}

/// List the ports a session's sandbox listens on
#[derive(Debug, clap::Args)]
pub struct PortsArgs {
    /// Session id
    pub id: String,
}

pub async fn ports(args: PortsArgs, ctx: &Ctx) -> Result<(), Error> {
    let listening = ctx.client()?.list_ports(&args.id).await?;
    if ctx.out.json {
        ctx.out.json(&listening);
    } else if listening.ports.is_empty() {
        ctx.out.status("the sandbox listens on no port");
    } else {
        let rows: Vec<Vec<String>> = listening
            .ports
            .iter()
            .map(|p| vec![p.port.to_string(), p.address.clone()])
            .collect();
        ctx.out.table(&["PORT", "ADDRESS"], &rows);
    }
    Ok(())
}

/// Print a signed, expiring preview URL of one sandbox port, or revoke them
#[derive(Debug, clap::Args)]
pub struct UrlArgs {
    /// Session id
    pub id: String,
    /// The sandbox port the URL opens (with --revoke: revoke only this port's URLs)
    #[arg(required_unless_present = "revoke")]
    pub port: Option<u16>,
    /// How long the URL works: `15m`, `2h`, `7d` (at most 7 days)
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION",
        default_value = "1h", conflicts_with = "revoke")]
    pub ttl: Duration,
    /// Revoke the URLs issued so far, of PORT or of every port of the session
    #[arg(long)]
    pub revoke: bool,
}

pub async fn url(args: UrlArgs, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    if args.revoke {
        let revoked = client.revoke_preview_urls(&args.id, args.port).await?;
        if ctx.out.json {
            ctx.out.json(&revoked);
        } else {
            let which = revoked
                .port
                .map_or_else(|| "every port".to_owned(), |p| format!("port {p}"));
            ctx.out.status(format!(
                "revoked the preview URLs of {which} of session {} issued until {}",
                revoked.session_id, revoked.revoked_before
            ));
        }
        return Ok(());
    }
    let port = args
        .port
        .ok_or_else(|| Error::usage("give the sandbox port", "e.g. `lap sessions url ID 8000`"))?;
    let ttl = match args.ttl.as_secs() {
        0 => DEFAULT_PREVIEW_TTL_SECS,
        secs => secs,
    };
    let preview = client
        .create_preview_url(
            &args.id,
            &CreatePreviewUrl {
                port,
                ttl_seconds: Some(ttl),
            },
        )
        .await?;
    if ctx.out.json {
        ctx.out.json(&preview);
    } else {
        ctx.out.line(&preview.url);
        ctx.out.status(format!(
            "works until {} without the master key; revoke with `lap sessions url {} {port} --revoke`",
            preview.expires_at, preview.session_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_a_port_or_local_colon_port() {
        assert_eq!(
            "8000".parse(),
            Ok(Mapping {
                local: 8000,
                remote: 8000
            })
        );
        assert_eq!("0:8000".parse(), Ok(Mapping { local: 0, remote: 8000 }));
        assert_eq!(
            "9000:80".parse(),
            Ok(Mapping {
                local: 9000,
                remote: 80
            })
        );
        assert!("8000:0".parse::<Mapping>().is_err());
        assert!("x:1".parse::<Mapping>().is_err());
        assert!("70000".parse::<Mapping>().is_err());
    }
}
