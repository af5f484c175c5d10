//! The glue between an intercepted WebSocket upgrade and the frame relay of [`super::websocket`].
//!
//! Owns [`Frames`]: what one upgraded connection's frames are rewritten with (the [`super::plan::Plan`]
//! of its upgrade), and its records — one `WS` record when the connection ends, with the credentials
//! its frames carried each way, and a block (an alert) when a stray stub ends it. Framing itself,
//! masking and the close handshake are [`super::websocket`]'s.

use std::sync::Arc;

use super::audit::Interception;
use super::plan::Binding;
use super::rewrite::Substitutions;
use super::websocket;

/// What the frames of one WebSocket connection are rewritten with.
pub struct Frames {
    /// Stubs bound to the host → real values (sandbox → upstream).
    pub swap: Arc<Substitutions>,
    /// Stubs of credentials not bound to the host: none may pass.
    pub stray: Arc<Substitutions>,
    /// Real values → stubs (upstream → sandbox).
    pub scrub: Arc<Substitutions>,
    pub binding: Arc<Binding>,
    /// Indices in the binding of the credentials in [`Frames::swap`]'s order.
    pub bound: Vec<usize>,
    /// The upgrade's record: the frames' is made from it when the connection ends.
    pub opened: Interception,
    /// What is recorded when a stray stub ends the connection.
    pub blocked: Interception,
}

impl Frames {
    /// Relays both directions until both end; a stray stub or unreadable framing on either side
    /// stops both, and a stray stub closes both with 1008 and is recorded.
    pub async fn relay<C, S>(self, client: C, server: S)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use super::websocket::{Direction, RelayError};
        let started = std::time::Instant::now();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let stop = tokio_util::sync::CancellationToken::new();
        let up = Direction {
            rewrite: &self.swap,
            stray: (!self.stray.is_empty()).then_some(&*self.stray),
            mask: true,
        };
        let down = Direction {
            rewrite: &self.scrub,
            stray: None,
            mask: false,
        };
        let (sent, received) = tokio::join!(
            websocket::relay_until(&mut client_read, &mut server_write, &up, &stop),
            websocket::relay_until(&mut server_read, &mut client_write, &down, &stop),
        );
        self.record_frames(started);
        for result in [&sent, &received] {
            match result {
                Err(RelayError::Stray) => {
                    self.binding.audit.record(self.blocked.clone());
                    let reason = "lap vault: a credential's stub not bound to this host";
                    let _ = websocket::close(&mut client_write, websocket::POLICY_VIOLATION, reason, false).await;
                    let _ = websocket::close(&mut server_write, websocket::POLICY_VIOLATION, reason, true).await;
                }
                Err(RelayError::Protocol(why)) => {
                    tracing::info!(host = %self.blocked.host, why, "a WebSocket connection was cut: unreadable frames");
                    let _ = websocket::close(&mut client_write, websocket::PROTOCOL_ERROR, why, false).await;
                }
                Err(RelayError::Io(err)) => tracing::debug!(error = %err, "a WebSocket connection ended"),
                Ok(()) => {}
            }
        }
    }

    /// When the frames swapped or scrubbed anything, one record of the connection (method `WS`):
    /// which credentials its frames carried each way, and how long it was open.
    fn record_frames(&self, started: std::time::Instant) {
        let (swapped, scrubbed) = (self.swap.hits(), self.scrub.hits());
        if swapped.is_empty() && scrubbed.is_empty() {
            return;
        }
        self.binding.audit.record(Interception {
            method: "WS".to_owned(),
            status: None,
            swapped: self.binding.names_of(&self.bound, &swapped),
            stubs_swapped: self.binding.stubs_of(&self.bound, &swapped),
            scrubbed: self.binding.names(&scrubbed),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            timestamp: crate::store::now(),
            ..self.opened.clone()
        });
    }
}
