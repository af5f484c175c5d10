//! `lap vault sidecar` (hidden): the vault standalone, as the Kubernetes backend runs it beside each
//! sandbox pod's harness. A composition root, like `serve.rs`.
//!
//! It serves the egress proxy on `--listen` (127.0.0.1 in the pod) with the binding in `--binding`
//! (a JSON file mounted from the session's Secret into this container only; its shape is
//! [`VaultBinding`], declared once in the wire contract, unknown fields refused), under the CA in
//! `--ca-dir` (likewise mounted only here: the pod's own CA, made for it alone by `lap serve`; the
//! sidecar loads it and never makes one). The admin endpoint on `--admin` takes a bearer token read
//! from `--admin-token-file` (compared in constant time) and offers:
//! - `PUT /binding`: replace the binding — late binding of a warm pod's session; connections opened
//!   afterwards use the new one;
//! - `GET /interceptions?after=N`: the records since position N, which the control plane pulls;
//! - `GET /health`: open.
//!
//! The binding file holds real credential values: it is read, never logged, and the admin endpoint
//! never returns it.
//!
//! Descriptors: the sidecar raises its `RLIMIT_NOFILE` to the hard limit and takes its budget from
//! it as `lap serve` does ([`limits::init`], [`Holder::Sidecar`]), one sandbox's places for the
//! whole pod (kept across a `PUT /binding`); connections idle for `--vault-idle-timeout` are
//! closed. Both listeners accept only what they have room for (the proxy's through
//! [`limits::accept_admitted`], the admin endpoint at most [`MAX_ADMIN_CONNECTIONS`], each within
//! [`ADMIN_CONNECTION_TIMEOUT`]) and rest on a failed accept instead of ending: the agent shares the
//! pod's network and can reach both, and the sidecar must outlast whatever it opens.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::output::Printer;
use crate::secret::Secret;
use crate::vault::audit::AuditLog;
use crate::vault::ca::CertificateAuthority;
use crate::vault::intercept::{Binding, ResolveOverride, Vault};
use crate::vault::limits::{self, ACCEPT_BACKOFF, Holder, MAX_ADMIN_CONNECTIONS, Tunnels};
use crate::wire::api::Interception;
use crate::wire::vault::VaultBinding;

/// Records the sidecar keeps for the control plane to pull.
const KEPT_RECORDS: usize = 10_000;
/// Largest binding the admin endpoint accepts.
const MAX_BINDING_BYTES: usize = 1024 * 1024;
/// How long one admin connection may last (the control plane's pulls open new ones as needed).
const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an admin connection has to send a request head.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the proxy listens (inside the pod)
    #[arg(long, default_value = "127.0.0.1:3128", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory with the pod's vault CA (`ca.pem`, `ca.key`), made by `lap serve` for this pod alone
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// JSON file with the session's binding (credentials with stubs, values and hosts; egress policy)
    #[arg(long, value_name = "FILE")]
    pub binding: Option<PathBuf>,
    /// Where the admin endpoint listens
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// File holding the admin endpoint's bearer token
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub admin_token_file: Option<PathBuf>,
    /// Make the vault connect to ADDR for HOST:PORT (repeatable), as `lap serve --vault-resolve`
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub vault_resolve: Vec<ResolveOverride>,
    /// Also trust this CA certificate (PEM) for upstream servers (repeatable)
    #[arg(long, value_name = "PEM")]
    pub vault_upstream_ca: Vec<PathBuf>,
    /// Close a proxy connection with no request in flight for this long, as `lap serve`'s vault
    #[arg(long, env = "LAP_VAULT_IDLE_TIMEOUT", default_value = "180s", value_parser = humantime::parse_duration, value_name = "DURATION", hide = true)]
    pub vault_idle_timeout: Duration,
}

/// What the proxy and the admin endpoint share.
struct Shared {
    binding: RwLock<Arc<Binding>>,
    sink: tokio::sync::mpsc::Sender<Interception>,
    records: Mutex<VecDeque<Interception>>,
    token: Option<Secret>,
}

impl Shared {
    fn bind(&self, bound: VaultBinding) {
        *self.binding.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(binding(bound, self.sink.clone()));
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        matches!((&self.token, presented), (Some(token), Some(given)) if token.ct_eq(given))
    }
}

fn binding(bound: VaultBinding, sink: tokio::sync::mpsc::Sender<Interception>) -> Binding {
    crate::vault::proxy_binding(bound, AuditLog::with_sink(sink))
}

fn read_binding(path: &Path) -> Result<VaultBinding, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::failed_with_hint(
            format!("`{}` is not a vault binding: {e}", path.display()),
            "expected {\"credentials\": [{\"name\", \"stub\", \"value\", \"hosts\", \"inject\", \"rules\"}], \"allow_out\", \"deny_out\", \"egress_default_deny\"}",
        )
    })
}

pub async fn run(args: Args, out: &Printer) -> Result<(), Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    // Before anything opens a descriptor the budget should count.
    let (limit, budget) = limits::init(Holder::Sidecar);
    if let Some(limit) = limit
        && budget.is_lowered()
    {
        out.warn(format!(
            "the descriptor limit ({}) allows the sandbox only {} connections through the vault (default {})\n\
             hint: raise the container's hard limit (`ulimit -Hn`) to at least {}",
            limit.now,
            budget.per_sandbox,
            limits::MAX_OPEN_CONNECTIONS,
            limits::full_budget_descriptors_of(Holder::Sidecar),
        ));
    }
    let ca = CertificateAuthority::load(&args.ca_dir).map_err(|e| {
        Error::failed_with_hint(
            crate::error::chain(&e),
            "mount the pod's CA (`ca.pem`, `ca.key` of its Secret) there; the sidecar never makes a CA of its own",
        )
    })?;
    let mut roots = Vec::new();
    for path in &args.vault_upstream_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| Error::failed(format!("cannot read `{}`: {e}", path.display())))?;
        roots.extend(certs);
    }
    let vault = Arc::new(
        Vault::new(Arc::new(ca), args.vault_resolve.clone(), roots)
            .map_err(|e| Error::failed(e.to_string()))?
            .with_idle_timeout(args.vault_idle_timeout),
    );
    let token = match &args.admin_token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?;
            Some(Secret::new(text.trim()))
        }
        None => None,
    };
    let (sink, mut records) = tokio::sync::mpsc::channel::<Interception>(KEPT_RECORDS);
    let initial = match &args.binding {
        Some(path) => read_binding(path)?,
        None => VaultBinding::default(),
    };
    let shared = Arc::new(Shared {
        binding: RwLock::new(Arc::new(binding(initial, sink.clone()))),
        sink,
        records: Mutex::new(VecDeque::new()),
        token,
    });

    // Number the records as they come and keep the newest.
    let keeper = shared.clone();
    tokio::spawn(async move {
        let mut next = 1;
        while let Some(mut record) = records.recv().await {
            record.id = next;
            next += 1;
            let mut kept = keeper.records.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() == KEPT_RECORDS {
                kept.pop_front();
            }
            kept.push_back(record);
        }
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", args.listen), e))?;
    let proxy_addr = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the proxy address", e))?;
    let mut line = format!("lap vault sidecar: proxy on {proxy_addr}");
    if let Some(admin) = args.admin {
        let admin_listener = TcpListener::bind(admin)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {admin}"), e))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the admin address", e))?;
        line.push_str(&format!(", admin on {admin_addr}"));
        let router = Router::new()
            .route("/health", get(|| async { "ok\n" }))
            .route("/binding", put(put_binding))
            .route("/interceptions", get(get_interceptions))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BINDING_BYTES))
            .with_state(shared.clone());
        tokio::spawn(serve_admin(admin_listener, router));
    }
    out.status(line);

    // The pod's one sandbox: its places outlive any one binding.
    let tunnels = Tunnels::new();
    let serve = |(stream, _): (tokio::net::TcpStream, SocketAddr), admission| {
        let _ = stream.set_nodelay(true);
        let binding = shared.binding.read().unwrap_or_else(|p| p.into_inner()).clone();
        tokio::spawn(vault.clone().serve_admitted(stream, binding, admission));
    };
    limits::accept_admitted(&tunnels, || listener.accept(), serve, &CancellationToken::new()).await;
    Ok(())
}

/// Serves the admin endpoint: at most [`MAX_ADMIN_CONNECTIONS`] at once (more wait in the
/// listener's backlog, costing no descriptor), each closed after [`ADMIN_CONNECTION_TIMEOUT`]; a
/// failed accept rests [`ACCEPT_BACKOFF`] and tries again.
async fn serve_admin(listener: TcpListener, router: Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let places = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        // Never closed.
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept an admin connection; trying again in {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            if let Ok(Err(err)) = tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, conn).await {
                tracing::debug!(error = %err, "an admin connection ended");
            }
            drop(place);
        });
    }
}

async fn put_binding(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    if !shared.authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<VaultBinding>(&body) {
        Ok(file) => {
            shared.bind(file);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[derive(Debug, Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn get_interceptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<After>,
) -> Result<Json<Vec<Interception>>, StatusCode> {
    if !shared.authorized(&headers) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let kept = shared.records.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(kept.iter().filter(|r| r.id > query.after).cloned().collect()))
}
