//! `lap serve`: the composition root of the control plane.
//!
//! It resolves the server's settings once ([`Settings`]: flags, environment, defaults), opens the
//! store, picks the sandbox backend (once; nothing below re-checks it), recovers state left by a
//! previous run, composes the API's router (`api_router`) and the preview origin's, and serves
//! them — HTTP, or HTTPS/WSS with `--tls-cert/--tls-key` — keeping the warm pool filled until
//! shutdown. [`serve`] is that server in mini-redis's shape: it takes its listener and a shutdown
//! token, so a test drives it in-process; [`run`] binds `--listen` and cancels the token on SIGINT
//! or SIGTERM. Shutdown stops accepting, lets open requests finish and waits for background tasks,
//! each with a deadline.
//!
//! On its first start it generates a master key (unless `LAP_MASTER_KEY` is set), prints it once and
//! keeps it in the data dir; and it writes a client config for the local user pointing at itself,
//! unless one exists, so `lap agents create …` works in the next terminal with no login step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::control::{Control, Services, pool};
use crate::error::Error;
use crate::output::Printer;
use crate::sandbox::kube::{self, Kube};
use crate::sandbox::{Sandbox, fake::Fake};
use crate::secret::Secret;
use crate::settings::{self, Env, Paths, ToolDeadlines};
use crate::store::Store;
use crate::vault::ca::CertificateAuthority;
use crate::vault::intercept::{ResolveOverride, Vault};

/// How often the reconciler looks for idle sessions and sandboxes that died: a quarter of the idle
/// TTL, between these bounds.
fn reconcile_every(idle_ttl: Duration) -> Duration {
    (idle_ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// A duration of the reaper's policy, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDuration(pub Option<Duration>);

fn parse_policy_duration(text: &str) -> Result<PolicyDuration, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(PolicyDuration(None));
    }
    humantime::parse_duration(text)
        .map(|d| PolicyDuration(Some(d)))
        .map_err(|e| format!("{e} (give a duration such as `15m`, or `off`)"))
}

/// How long shutdown waits for open connections and background tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest master key accepted (LAP's rule).
const MIN_MASTER_KEY: usize = 8;
/// How long the API listener rests after a failed accept (`EMFILE`): the vault's.
use crate::vault::limits::ACCEPT_BACKOFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Linux namespaces on this machine
    Local,
    /// Pods in a Kubernetes cluster
    Kube,
    /// In-memory sandboxes, for tests
    #[value(hide = true)]
    Fake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressDefault {
    /// Every public destination is reachable unless deny_out names it
    Allow,
    /// Only destinations in the agent's allow_out are reachable
    Deny,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on
    #[arg(long, env = "LAP_LISTEN", default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where the database, keys and sandboxes live [default: the XDG data dir, ~/.local/share/lap]
    #[arg(long, env = "LAP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sandbox backend
    #[arg(long, env = "LAP_BACKEND", value_enum, default_value = "local")]
    pub backend: Backend,
    /// Serve HTTPS and WSS with this certificate chain (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (the master key then crosses the network in clear)
    #[arg(long)]
    pub insecure_http: bool,
    /// Make the vault connect to ADDR for HOST:PORT, like curl's --resolve (repeatable); these
    /// addresses count as explicitly allowed, internal ones included
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub vault_resolve: Vec<ResolveOverride>,
    /// Reap sessions with no activity (message, terminal input, attach) for this long: `90s`, `15m`, `24h`.
    /// The reaper's last step: the session is deleted with its workspace
    #[arg(long, env = "LAP_SESSION_IDLE_TTL", default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_ttl: Duration,
    /// Pause (freeze, memory kept) a session with no activity for this long; `off` never does.
    /// An attach, a message or an exec resumes it
    #[arg(long, env = "LAP_SESSION_PAUSE_AFTER", default_value = "off", value_parser = parse_policy_duration, value_name = "DURATION")]
    pub pause_after: PolicyDuration,
    /// Hibernate (stop its sandbox, keep only its workspace) a session with no activity for this
    /// long; `off` never does. An attach, a message or an exec brings it back on a new sandbox
    #[arg(long, env = "LAP_SESSION_HIBERNATE_AFTER", default_value = "off", value_parser = parse_policy_duration, value_name = "DURATION")]
    pub hibernate_after: PolicyDuration,
    /// Close a vault connection (a sandbox's tunnel) with no request in flight (a long stream is one)
    /// for this long: `180s`, `2s`
    // Hidden: the default suits every use but tests. Documented with the vault's limits in
    // docs/security.md, and in docs/reference/configuration.md by its environment variable.
    #[arg(long, env = "LAP_VAULT_IDLE_TIMEOUT", default_value = "180s", value_parser = humantime::parse_duration, value_name = "DURATION", hide = true)]
    pub vault_idle_timeout: Duration,
    /// What the vault does with a destination an agent's allow_out does not list, when it has none
    #[arg(long, env = "LAP_EGRESS_DEFAULT", value_enum, default_value = "allow")]
    pub egress_default: EgressDefault,
    /// Also trust this CA certificate (PEM) for upstream servers (repeatable)
    #[arg(long, value_name = "PEM")]
    pub vault_upstream_ca: Vec<PathBuf>,
    /// Warm sandboxes kept ready in total, divided between the harnesses in use and recent agents
    /// (0: no pool, every session creates its sandbox)
    #[arg(long, env = "WARM_POOL_SIZE", default_value_t = pool::DEFAULT_SIZE, value_name = "N")]
    pub warm_pool_size: u32,
    /// Agents with a session in the last this many hours get a warm sandbox with their repo cloned
    #[arg(long, env = "WARM_POOL_RECENT_AGENT_HOURS", default_value_t = pool::DEFAULT_RECENT_AGENT_HOURS, value_name = "HOURS")]
    pub warm_pool_recent_agent_hours: u64,
    /// Recycle warm sandboxes older than this: `30m`, `2h`
    #[arg(long, env = "LAP_WARM_POOL_MAX_AGE", default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub warm_pool_max_age: Duration,
    /// How the local backend limits memory, processes and CPU: cgroups where writable, else rlimits
    /// (`auto`), or rlimits only (`off`)
    #[arg(long, env = "LAP_SANDBOX_CGROUPS", value_enum, default_value = "auto")]
    pub sandbox_cgroups: SandboxCgroups,
    /// Kubernetes backend: the kubeconfig context to use [default: the current one, or the
    /// in-cluster service account]
    #[arg(long, env = "LAP_KUBE_CONTEXT", value_name = "NAME")]
    pub kube_context: Option<String>,
    /// Kubernetes backend: the namespace sandbox pods are made in [default: the context's, else
    /// `default`]
    #[arg(long, env = "LAP_KUBE_NAMESPACE", value_name = "NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// Kubernetes backend: the sandbox image (`lap` on PATH; see `kind/Dockerfile`)
    #[arg(
        long,
        env = "LAP_KUBE_IMAGE",
        default_value = "lap-sandbox:dev",
        value_name = "IMAGE"
    )]
    pub kube_image: String,
    /// Kubernetes backend: how sandbox pods are reached — through the API server's port-forward
    /// (`port-forward`: from anywhere), straight to the pod IP (`pod-ip`: for a `lap serve` running in
    /// the cluster), or `auto`: `pod-ip` with the in-cluster configuration, else `port-forward`
    #[arg(long, env = "LAP_KUBE_REACH", value_enum, default_value = "auto")]
    pub kube_reach: KubeReach,
    /// Kubernetes backend: where the pods' vault runs — a `lap vault sidecar` in each pod behind an
    /// iptables egress fence (`sidecar`: the namespace must admit Pod Security `privileged`; works
    /// whatever the CNI), or `lap serve` itself (`gateway`: pods hold only the harness and meet
    /// `restricted`, but must reach `lap serve`, and only the CNI's NetworkPolicy fences them)
    #[arg(long, env = "LAP_KUBE_VAULT", value_enum, default_value = "sidecar")]
    pub kube_vault: KubeVaultMode,
    /// Kubernetes backend, `--kube-vault gateway`: where `lap serve` takes the pods' proxy
    /// connections
    #[arg(
        long,
        env = "LAP_KUBE_GATEWAY_LISTEN",
        default_value = "0.0.0.0:3128",
        value_name = "ADDR"
    )]
    pub kube_gateway_listen: SocketAddr,
    /// Kubernetes backend, `--kube-vault gateway`: the address pods dial for the gateway
    /// [default: `lap-serve.NAMESPACE.svc:PORT`, the Service of `deploy/`, PORT that of
    /// --kube-gateway-listen]
    #[arg(long, env = "LAP_KUBE_GATEWAY_ADDR", value_name = "HOST:PORT")]
    pub kube_gateway_addr: Option<String>,
    /// Kubernetes backend: the StorageClass of each session's workspace claim (its `/work`, kept
    /// while the session lives: across hibernation, restarts and crashes) [default: the cluster's
    /// default class]
    #[arg(long, env = "LAP_KUBE_WORKSPACE_CLASS", value_name = "CLASS")]
    pub kube_workspace_class: Option<String>,
    /// Kubernetes backend: the storage each session's workspace claim asks for, a Kubernetes
    /// quantity; `none` for no claims (each pod's `/work` is then an `emptyDir`, gone with the pod,
    /// and hibernate, snapshots and forks are refused)
    #[arg(long, env = "LAP_KUBE_WORKSPACE_SIZE", default_value = "10Gi", value_name = "QUANTITY|none",
          value_parser = parse_workspace_size)]
    pub kube_workspace_size: String,
    /// Kubernetes backend: the VolumeSnapshotClass of workspace snapshots (`lap snapshots create`)
    /// [default: the cluster's default snapshot class]
    #[arg(long, env = "LAP_KUBE_SNAPSHOT_CLASS", value_name = "CLASS")]
    pub kube_snapshot_class: Option<String>,
    /// Where sandbox previews are served (signed preview URLs): an origin of their own, never the
    /// API's or the web UI's; `off` for none [default: the --listen IP, its port + 1 (3001 beside
    /// 3000), or a free port when that one is taken or --listen's port is 0]
    #[arg(long, env = "LAP_PREVIEW_LISTEN", value_name = "ADDR|off")]
    pub preview_listen: Option<String>,
    /// The preview origin's public base URL, when a proxy or a DNS name fronts --preview-listen
    /// (e.g. `https://preview.example.com`) [default: the preview listener's own address]
    #[arg(long, env = "LAP_PREVIEW_URL", value_name = "URL")]
    pub preview_url: Option<String>,
    /// Serve each session's port on a host name of its own, `p{PORT}-{SESSION}.DOMAIN` on the
    /// preview listener's port (an origin per session and port; `localhost` works in browsers without
    /// DNS; elsewhere a wildcard DNS record to the preview listener) [default: one origin for all]
    #[arg(long, env = "LAP_PREVIEW_DOMAIN", value_name = "DOMAIN")]
    pub preview_domain: Option<String>,
    /// This server's base URL as browsers and the CLI reach it, when a proxy or a DNS name fronts it
    /// (e.g. `https://lap.example.com`): OIDC sign-in's redirect URI is its `/auth/oidc/callback`
    /// [default: the URL `lap serve` prints]
    #[arg(long, env = "LAP_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// OIDC sign-in (web UI and `lap login --oidc`): the OpenID provider's issuer URL (HTTPS, or
    /// HTTP on this machine); the client secret is read from `LAP_OIDC_CLIENT_SECRET`
    #[arg(long, env = "LAP_OIDC_ISSUER", value_name = "URL", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// OIDC: this server's client id at the provider (register the redirect URI
    /// `<public URL>/auth/oidc/callback` there)
    #[arg(long, env = "LAP_OIDC_CLIENT_ID", value_name = "ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// OIDC: the scopes asked for besides `openid` (repeatable, or comma-separated); `groups` if
    /// the provider has it and --oidc-allow-group or --oidc-admin-group are used
    #[arg(
        long,
        env = "LAP_OIDC_SCOPES",
        value_name = "SCOPE",
        value_delimiter = ',',
        default_value = "email,profile"
    )]
    pub oidc_scope: Vec<String>,
    /// OIDC: people whose verified email is in this domain become users at their first sign-in
    /// (repeatable, or comma-separated) [default: none: only users made ahead, named by their email]
    #[arg(long, env = "LAP_OIDC_ALLOW_DOMAINS", value_name = "DOMAIN", value_delimiter = ',')]
    pub oidc_allow_domain: Vec<String>,
    /// OIDC: members of this group (the `groups` claim) become users at their first sign-in
    /// (repeatable, or comma-separated)
    #[arg(long, env = "LAP_OIDC_ALLOW_GROUPS", value_name = "GROUP", value_delimiter = ',')]
    pub oidc_allow_group: Vec<String>,
    /// OIDC: the role of a signed-in user's key
    #[arg(long, env = "LAP_OIDC_ROLE", value_name = "ROLE", default_value = "member", value_parser = parse_role)]
    pub oidc_role: crate::wire::teams::Role,
    /// OIDC: members of this group sign in as admins (repeatable, or comma-separated)
    #[arg(long, env = "LAP_OIDC_ADMIN_GROUPS", value_name = "GROUP", value_delimiter = ',')]
    pub oidc_admin_group: Vec<String>,
    /// OIDC: how long the key `lap login --oidc` gets lasts: `30d`, `12h`
    #[arg(long, env = "LAP_OIDC_CLI_KEY_TTL", default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub oidc_cli_key_ttl: Duration,
    /// Largest file (or tar stream) one upload into a sandbox may be, in bytes
    #[arg(long, env = "LAP_MAX_UPLOAD_BYTES", default_value_t = crate::wire::files::DEFAULT_MAX_UPLOAD_BYTES, value_name = "BYTES")]
    pub max_upload_bytes: u64,
}

fn parse_role(text: &str) -> Result<crate::wire::teams::Role, String> {
    crate::wire::teams::Role::parse(text).ok_or_else(|| format!("`{text}` is not a role: admin, member or viewer"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeReach {
    /// `pod-ip` when `lap serve` runs in the cluster (in-cluster configuration), else `port-forward`
    Auto,
    /// Through the API server's port-forward
    PortForward,
    /// Straight to each pod's IP
    PodIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeVaultMode {
    /// A `lap vault sidecar` container in each pod, behind an iptables egress fence
    Sidecar,
    /// `lap serve`'s own vault, which pods reach through the cluster network
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxCgroups {
    /// cgroup v1 or v2 where writable, rlimits for the rest
    Auto,
    /// rlimits only
    Off,
}

/// `lap serve`'s settings, resolved once at its start from its flags (clap applies their `env =`
/// and defaults), the environment ([`Env`]: what is not a flag's `env =`) and the platform's
/// directories. Nothing below reads the environment again.
pub struct Settings {
    /// The flags, with their environment variables and defaults applied.
    pub args: Args,
    /// `--data-dir`, or the platform's data directory for lap.
    pub data_dir: PathBuf,
    /// `LAP_MASTER_KEY`, checked; `None`: the key kept in the data dir, or a new one.
    pub master_key: Option<Secret>,
    /// `LAP_TOOL_START_TIMEOUT` and `LAP_TOOL_SILENCE_TIMEOUT`.
    pub tool_deadlines: ToolDeadlines,
    /// `LAP_OIDC_CLIENT_SECRET`, required with `--oidc-issuer`.
    pub oidc_client_secret: Option<Secret>,
    /// The local user's client config, which `lap serve` writes pointing at itself unless it exists
    /// (`None`: no home directory, or a server that writes none, as in tests), with the environment
    /// that says which store keeps its key.
    pub client_config: Option<(Paths, Env)>,
}

impl Settings {
    /// `args` and `env` merged and checked: plain HTTP only on loopback unless `--insecure-http`,
    /// tool deadlines in whole seconds, a data dir, a master key long enough.
    pub fn resolve(args: Args, env: &Env) -> Result<Self, Error> {
        check_plain_http(&args)?;
        let tool_deadlines = ToolDeadlines::from_env(env).map_err(|message| {
            Error::usage(
                message,
                "give whole seconds, e.g. `600`, or unset it for its default; see docs/reference/configuration.md",
            )
        })?;
        let data_dir = data_dir(&args)?;
        let master_key = match &env.master_key {
            Some(key) if key.len() < MIN_MASTER_KEY => {
                return Err(Error::usage(
                    format!("`LAP_MASTER_KEY` is shorter than {MIN_MASTER_KEY} characters"),
                    "use a long random key, e.g. `openssl rand -hex 32`",
                ));
            }
            key => key.clone().map(Secret::new),
        };
        let oidc_client_secret = env.oidc_client_secret.clone().map(Secret::new);
        if args.oidc_issuer.is_some() && oidc_client_secret.is_none() {
            return Err(Error::usage(
                "`--oidc-issuer` is set but `LAP_OIDC_CLIENT_SECRET` is not",
                "set `LAP_OIDC_CLIENT_SECRET` to the client secret the provider gave (it is never a flag, so never in `ps`)",
            ));
        }
        Ok(Self {
            args,
            data_dir,
            master_key,
            tool_deadlines,
            oidc_client_secret,
            client_config: Paths::discover().ok().map(|paths| (paths, env.clone())),
        })
    }
}

/// `lap serve`: resolves its settings, binds `--listen` and [`serve`]s there until SIGINT or SIGTERM.
pub async fn run(args: Args, env: &Env, out: &Printer) -> Result<(), Error> {
    let settings = Settings::resolve(args, env)?;
    descriptor_budget(out);
    let listen = settings.args.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {listen}"), e))?;
    let shutdown = CancellationToken::new();
    let serving = serve(settings, listener, shutdown.clone(), out);
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        () = watch_signals(shutdown) => {}
    }
    serving.await
}

/// The control plane, served on `listener` until `shutdown` is cancelled (mini-redis's
/// `server::run`): it opens the store, picks the sandbox backend, recovers and starts the session
/// service, binds the preview listener beside `listener`, and serves the API on `listener`. On
/// shutdown it stops accepting, lets open requests finish and then waits for the background tasks,
/// each at most [`SHUTDOWN_GRACE`]; it returns once they are done (or past their grace). A failure
/// after the background work started cancels and drains it before it is returned.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    out: &Printer,
) -> Result<(), Error> {
    let args = &settings.args;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let data_dir = &settings.data_dir;
    let store = open_store(data_dir, out)?;
    let master_key = master_key(settings.master_key.clone(), data_dir, out)?;
    let (vault, ca_bundle) = vault(args, data_dir)?;
    let (sandbox, k8s, gateway) = sandbox_backend(args, &vault, data_dir, out).await?;
    let tasks = TaskTracker::new();
    let session_tasks = TaskTracker::new();
    let composed = async {
        if let Some((gateway, listener)) = gateway {
            tasks.spawn(gateway.serve(listener, shutdown.child_token()));
        }
        let services = Services {
            ca_bundle,
            egress_default_deny: args.egress_default == EgressDefault::Deny,
            idle_ttl: args.idle_ttl,
            pool: pool::PoolConfig {
                size: args.warm_pool_size,
                recent_agents: Duration::from_secs(args.warm_pool_recent_agent_hours.saturating_mul(3600)),
                max_age: args.warm_pool_max_age,
            },
            tool_deadlines: settings.tool_deadlines,
            tasks: tasks.clone(),
            session_tasks: session_tasks.clone(),
            shutdown: shutdown.clone(),
            ..Services::new(store.clone(), sandbox, vault)
        };
        let control = start_control(args, services, data_dir, out).await?;
        let (local, url) = url_of(&listener, tls.is_some())?;
        let app = AppState {
            store,
            control,
            master_key: Arc::new(master_key.clone()),
            oidc: oidc(&settings, &url)?,
        };
        // Issue 17 part 1: the preview origin, on a listener of its own.
        let previews = match preview_listener(args, local, &url, data_dir, out).await? {
            Some((listener, base, key)) => {
                let previews = Arc::new(
                    crate::control::ports::Previews::new(&key, app.store.clone(), base)
                        .with_domain(args.preview_domain.clone()),
                );
                let router = preview_router(&app, previews.clone(), tls.is_some());
                tasks.spawn(serve_connections(listener, tls.clone(), router, shutdown.clone()));
                Some(previews)
            }
            None => None,
        };
        // Issue 18: MCP at `/mcp`, its tools calling this server's own API (loopback, the master
        // key), as `lap mcp` does with the client config written below.
        let loopback = crate::client::Client::new(&url, Some(master_key.clone()), args.tls_cert.as_deref())?;
        let mcp = crate::mcp::http::router(
            loopback,
            Arc::new(master_key.clone()),
            app.store.clone(),
            shutdown.child_token(),
        );
        let router = api_router(app, k8s, tls.is_some(), args.max_upload_bytes, previews).merge(mcp);
        Ok::<_, Error>((router, url))
    };
    let (router, url) = match composed.await {
        Ok(composed) => composed,
        Err(err) => {
            shutdown.cancel();
            drain([&tasks, &session_tasks]).await;
            return Err(err);
        }
    };
    if let Some((paths, env)) = &settings.client_config {
        write_client_config(paths, env, &url, &master_key, args.tls_cert.as_deref(), out);
    }
    out.status(format!(
        "lap serve listening on {url} (backend: {}, data: {})",
        args.backend_name(),
        data_dir.display()
    ));
    serve_connections(listener, tls, router, shutdown.clone()).await;
    drain([&tasks, &session_tasks]).await;
    out.status("lap serve stopped");
    Ok(())
}

/// OIDC sign-in, when `--oidc-issuer` is given; `url` is this server's own, the public URL's default.
fn oidc(settings: &Settings, url: &str) -> Result<Option<Arc<api::oidc::Oidc>>, Error> {
    let args = &settings.args;
    let (Some(issuer), Some(client_id), Some(secret)) =
        (&args.oidc_issuer, &args.oidc_client_id, &settings.oidc_client_secret)
    else {
        return Ok(None);
    };
    let config = api::oidc::OidcConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: secret.clone(),
        public_url: args.public_url.clone().unwrap_or_else(|| url.to_owned()),
        scopes: args.oidc_scope.iter().filter(|s| *s != "openid").cloned().collect(),
        allow_domains: args.oidc_allow_domain.clone(),
        allow_groups: args.oidc_allow_group.clone(),
        role: args.oidc_role,
        admin_groups: args.oidc_admin_group.clone(),
        cli_key_ttl: args.oidc_cli_key_ttl,
    };
    let oidc = api::oidc::Oidc::new(config)
        .map_err(|message| Error::usage(message, "see docs/operating/teams.md#sign-in-with-oidc"))?;
    Ok(Some(Arc::new(oidc)))
}

/// The API's router: [`api::router`] with what this server adds — the Kubernetes backend for its
/// cluster probe, the mark of HTTPS, the upload limit and the preview URLs it signs.
fn api_router(
    app: AppState,
    k8s: Option<Arc<Kube>>,
    tls: bool,
    max_upload_bytes: u64,
    previews: Option<Arc<crate::control::ports::Previews>>,
) -> axum::Router {
    let router = api::router(app);
    let router = match k8s {
        Some(kube) => router.layer(axum::Extension(api::K8sProbe(kube))),
        None => router,
    };
    let router = if tls { api::over_tls(router) } else { router };
    let router = router.layer(axum::Extension(api::FileLimits { max_upload_bytes }));
    match previews {
        Some(previews) => api::ports::with_previews(router, previews),
        None => router,
    }
}

/// The preview origin's router ([`api::ports::preview_router`]), served on a listener of its own.
fn preview_router(app: &AppState, previews: Arc<crate::control::ports::Previews>, tls: bool) -> axum::Router {
    let router = api::ports::preview_router(api::ports::PreviewState {
        app: app.clone(),
        previews,
    });
    if tls { api::over_tls(router) } else { router }
}

/// Refuses plain HTTP on an address other than loopback unless `--insecure-http` says the network
/// is trusted.
fn check_plain_http(args: &Args) -> Result<(), Error> {
    if !args.listen.ip().is_loopback() && args.tls_cert.is_none() && !args.insecure_http {
        return Err(Error::usage(
            format!("refusing to serve plain HTTP on non-loopback address {}", args.listen),
            "give --tls-cert and --tls-key, or --insecure-http if the network is trusted; see docs/troubleshooting.md#plain-http",
        ));
    }
    Ok(())
}

/// `--data-dir`, or the platform's data directory for lap.
fn data_dir(args: &Args) -> Result<PathBuf, Error> {
    match args.data_dir.clone() {
        Some(dir) => Ok(dir),
        None => Ok(directories::ProjectDirs::from("dev", "lap", "lap")
            .ok_or_else(|| Error::failed_with_hint("no home directory to keep data in", "pass --data-dir DIR"))?
            .data_dir()
            .to_owned()),
    }
}

/// Opens the store in `data_dir` and says how many stored credentials it migrated.
fn open_store(data_dir: &Path, out: &Printer) -> Result<Store, Error> {
    let store = Store::open(data_dir)?;
    match store.migrated_credentials() {
        0 => {}
        1 => out.status("migrated 1 stored credential to its preset's injection points"),
        n => out.status(format!(
            "migrated {n} stored credentials to their presets' injection points"
        )),
    }
    Ok(store)
}

/// The vault gateway of the Kubernetes backend's gateway mode, with its bound listener.
type GatewayToServe = (Arc<crate::vault::gateway::Gateway>, TcpListener);

/// The sandbox backend `--backend` names, checked where it can be: with the Kubernetes backend, the
/// backend itself for the cluster probe, and in gateway mode the gateway with its bound listener.
#[allow(clippy::type_complexity)]
async fn sandbox_backend(
    args: &Args,
    vault: &Vault,
    data_dir: &Path,
    out: &Printer,
) -> Result<
    (
        Arc<dyn Sandbox>,
        Option<Arc<Kube>>,
        Option<(Arc<crate::vault::gateway::Gateway>, TcpListener)>,
    ),
    Error,
> {
    let mut k8s = None;
    let mut gateway = None;
    let sandbox: Arc<dyn Sandbox> = match args.backend {
        Backend::Fake => Arc::new(Fake::default()),
        Backend::Local => crate::platform::local_sandbox(data_dir, args.sandbox_cgroups == SandboxCgroups::Auto)
            .map_err(|e| Error::failed_with_hint(e.to_string(), e.hint()))?,
        Backend::Kube => {
            let (backend, listener) = kube_backend(args, vault, out).await?;
            let backend = Arc::new(backend);
            k8s = Some(backend.clone());
            gateway = listener;
            backend
        }
    };
    // A local backend that cannot create namespaces fails now, naming the sysctl to change.
    if args.backend == Backend::Local {
        sandbox.check().await.map_err(|e| Error::failed(e.to_string()))?;
    }
    Ok((sandbox, k8s, gateway))
}

/// The session service over `services`, with the workspaces and reaper steps the arguments ask
/// for, started: sessions of before recovered (or, with a backend that does not answer yet, a
/// warning and recovery in the background) and its loops running.
async fn start_control(args: &Args, services: Services, data_dir: &Path, out: &Printer) -> Result<Arc<Control>, Error> {
    let sandbox = services.sandbox.clone();
    let lifecycle = crate::control::Lifecycle {
        // Workspaces that outlive their sandbox: host directories the local backend mounts, or the
        // Kubernetes backend's own claims.
        workspaces: if args.backend == Backend::Local {
            Some(crate::control::Workspaces::new(data_dir))
        } else if sandbox.keeps_workspaces() {
            Some(crate::control::Workspaces::Backend)
        } else {
            None
        },
        pause_after: args.pause_after.0,
        hibernate_after: args.hibernate_after.0,
    };
    let every = [args.pause_after.0, args.hibernate_after.0]
        .into_iter()
        .flatten()
        .fold(args.idle_ttl, Duration::min);
    let control = Control::with_lifecycle(services, lifecycle);
    let started = control
        .start(reconcile_every(every))
        .await
        .map_err(|e| Error::failed(format!("cannot recover sessions at start: {e}")))?;
    if let crate::control::Started::Deferred(err) = started {
        out.status(format!(
            "warning: the sandbox backend does not answer ({err}); lap serve keeps trying, and recovers \
             the sessions of before this start and takes new ones once it does"
        ));
    }
    Ok(control)
}

/// The address `listener` took, and the URL clients reach it at (loopback for an unspecified
/// address).
fn url_of(listener: &TcpListener, tls: bool) -> Result<(SocketAddr, String), Error> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    let scheme = if tls { "https" } else { "http" };
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    let host = if local.is_ipv6() && !local.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("{scheme}://{host}:{}", local.port());
    Ok((local, url))
}

/// Waits, at most [`SHUTDOWN_GRACE`] in all, for the background work on `trackers` to finish (the
/// control plane's own and its sessions', [`Services::session_tasks`]).
async fn drain(trackers: [&TaskTracker; 2]) {
    let all = async {
        for tasks in trackers {
            tasks.close();
            tasks.wait().await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        tracing::warn!("background tasks did not finish within {SHUTDOWN_GRACE:?}");
    }
}

impl Args {
    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Local => "local",
            Backend::Kube => "kube",
            Backend::Fake => "fake",
        }
    }
}

/// The vault CA (made on first start, kept in `<data dir>/vault`), the vault, and the CA bundle
/// sandboxes trust: the system roots plus the vault CA. On Kubernetes in sidecar mode no sandbox
/// trusts `lap serve`'s CA (each pod's vault has one of its own), so it is made in memory only and
/// no key or bundle is written (`None`).
fn vault(args: &Args, data_dir: &Path) -> Result<(Arc<Vault>, Option<PathBuf>), Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let dir = data_dir.join("vault");
    let signs_for_sandboxes = !(args.backend == Backend::Kube && args.kube_vault == KubeVaultMode::Sidecar);
    let ca = if signs_for_sandboxes {
        CertificateAuthority::load_or_create(&dir)
    } else {
        CertificateAuthority::ephemeral()
    }
    .map_err(|e| Error::failed_with_hint(crate::error::chain(&e), "delete the broken files to make a new CA"))?;
    let mut roots = Vec::new();
    for path in &args.vault_upstream_ca {
        let certs: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect());
        match certs {
            Ok(certs) if !certs.is_empty() => roots.extend(certs),
            _ => {
                return Err(Error::usage(
                    format!("`--vault-upstream-ca {}` holds no PEM certificate", path.display()),
                    "pass the CA certificate of the upstream, in PEM",
                ));
            }
        }
    }
    let bundle = if signs_for_sandboxes {
        let bundle = dir.join("ca-bundle.pem");
        let text = crate::vault::ca::trust_bundle(&system_roots(), &ca.cert_pem());
        std::fs::write(&bundle, text).map_err(|e| Error::io(format!("cannot write `{}`", bundle.display()), e))?;
        Some(bundle)
    } else {
        None
    };
    let vault = Vault::new(Arc::new(ca), args.vault_resolve.clone(), roots)
        .map_err(|e| Error::failed(e.to_string()))?
        .with_idle_timeout(args.vault_idle_timeout);
    Ok((Arc::new(vault), bundle))
}

/// Raises the descriptor limit to the hard limit and derives the vault's budget from it
/// ([`crate::vault::limits`]); says so when the limit, not the default, bounds each sandbox.
fn descriptor_budget(out: &Printer) {
    let (limit, budget) = crate::vault::limits::init(crate::vault::limits::Holder::Serve);
    let Some(limit) = limit else { return };
    tracing::debug!(
        was = limit.was,
        now = limit.now,
        per_sandbox = budget.per_sandbox,
        vault_descriptors = budget.vault_descriptors,
        "descriptor limit"
    );
    if budget.is_lowered() {
        out.status(format!(
            "warning: the descriptor limit ({}) allows each sandbox only {} connections through the vault \
             (default {}), {} descriptors for the vault in all\nhint: raise the hard limit (`ulimit -Hn`, \
             systemd `LimitNOFILE=`) to at least {}",
            limit.now,
            budget.per_sandbox,
            crate::vault::limits::MAX_OPEN_CONNECTIONS,
            budget.vault_descriptors,
            crate::vault::limits::full_budget_descriptors(),
        ));
    }
}

/// The Kubernetes backend: the user's kubeconfig (or the in-cluster configuration) and the system
/// roots each pod's CA bundle starts with. In sidecar mode the CA of [`vault`] (in memory only) is
/// not handed to it (each pod gets a CA of its own); in gateway mode its certificate is (every pod trusts
/// `vault`, which runs here), and the gateway's listener is bound and returned, to be served. A
/// cluster that does not answer is not an error here (`GET /api/v1/health/k8s` tells), one that is
/// not configured at all is.
async fn kube_backend(args: &Args, vault: &Vault, out: &Printer) -> Result<(Kube, Option<GatewayToServe>), Error> {
    let (client, namespace, in_cluster) = kube::client(args.kube_context.clone(), args.kube_namespace.clone())
        .await
        .map_err(|e| {
            Error::failed_with_hint(
                e.to_string(),
                "set `KUBECONFIG` or pass `--kube-context`; `scripts/kind-up.sh` makes a local kind cluster \
                 and prints the `lap serve --backend kube` line to run",
            )
        })?;
    let config = kube::KubeConfig {
        namespace,
        image: args.kube_image.clone(),
        defaults: kube::manifest::Resources::harness_default(),
        system_roots_pem: system_roots(),
        ready_timeout: kube::READY_TIMEOUT,
        reach: match args.kube_reach {
            KubeReach::PortForward => kube::Reach::PortForward,
            KubeReach::PodIp => kube::Reach::PodIp,
            KubeReach::Auto if in_cluster => kube::Reach::PodIp,
            KubeReach::Auto => kube::Reach::PortForward,
        },
        workspace: (args.kube_workspace_size != "none").then(|| kube::manifest::WorkspaceStorage {
            class: args.kube_workspace_class.clone(),
            size: args.kube_workspace_size.clone(),
            snapshot_class: args.kube_snapshot_class.clone(),
        }),
        vault: kube::KubeVault::Sidecar,
    };
    let (config, listener) = match args.kube_vault {
        KubeVaultMode::Sidecar => (config, None),
        KubeVaultMode::Gateway => {
            let (gateway, listener) = kube_gateway(args, vault, &config.namespace, out).await?;
            (
                kube::KubeConfig {
                    vault: kube::KubeVault::Gateway(gateway.clone()),
                    ..config
                },
                Some((gateway.gateway, listener)),
            )
        }
    };
    out.status(format!(
        "kube backend: namespace `{}`, image `{}`, pods reached {}, workspaces {}",
        config.namespace,
        config.image,
        match config.reach {
            kube::Reach::PortForward => "through the API server's port-forward",
            kube::Reach::PodIp => "on their pod IPs",
        },
        match &config.workspace {
            Some(storage) => format!(
                "on claims of {} (storage class `{}`)",
                storage.size,
                storage.class.as_deref().unwrap_or("the cluster's default")
            ),
            None => "gone with their pods (`--kube-workspace-size none`)".to_owned(),
        }
    ));
    Ok((Kube::new(client, config), listener))
}

/// Binds the vault gateway's listener (`--kube-gateway-listen`) and says where pods dial it.
async fn kube_gateway(
    args: &Args,
    vault: &Vault,
    namespace: &str,
    out: &Printer,
) -> Result<(kube::GatewayConfig, TcpListener), Error> {
    let listen = args.kube_gateway_listen;
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {listen} for the vault gateway (`--kube-gateway-listen`)"),
            e,
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the vault gateway's address", e))?
        .port();
    let addr = args
        .kube_gateway_addr
        .clone()
        .unwrap_or_else(|| format!("lap-serve.{namespace}.svc:{port}"));
    out.status(format!(
        "kube vault gateway on {}, pods dial `{addr}` with their proxy credential",
        SocketAddr::new(listen.ip(), port)
    ));
    let config = kube::GatewayConfig {
        gateway: crate::vault::gateway::Gateway::new(),
        addr,
        port,
        ca_cert_pem: vault.ca_pem(),
    };
    Ok((config, listener))
}

/// `--kube-workspace-size`: a Kubernetes quantity of storage, or `none`.
fn parse_workspace_size(value: &str) -> Result<String, String> {
    match value {
        "none" => Ok(value.to_owned()),
        _ if kube::workspace::quantity_bytes(value).is_some_and(|b| b > 0) => Ok(value.to_owned()),
        _ => Err(format!(
            "`{value}` is not a size: give a Kubernetes quantity such as `10Gi` or `500M`, or `none`"
        )),
    }
}

/// The host's CA bundle (Debian's path), the base of the sandboxes' bundle.
const CA_BUNDLE_HOST: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The host's system roots (PEM; empty where the host has no bundle at [`CA_BUNDLE_HOST`]).
fn system_roots() -> String {
    std::fs::read_to_string(CA_BUNDLE_HOST).unwrap_or_default()
}

/// The resolved `LAP_MASTER_KEY`, else the key kept in the data dir, else a new one (printed once,
/// then kept).
fn master_key(from_env: Option<Secret>, data_dir: &Path, out: &Printer) -> Result<Secret, Error> {
    if let Some(key) = from_env {
        return Ok(key);
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(Secret::new(key.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    }
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::failed("the system random generator failed"))?;
    let key = format!(
        "lapk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    settings::write_private_file(&path, key.as_bytes())
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    out.status(format!("generated a master key: {key}"));
    out.status(format!(
        "  it is kept in `{}` (mode 0600) and not printed again",
        path.display()
    ));
    Ok(Secret::new(key))
}

/// Writes the client config in `paths` (`~/.config/lap/config.toml`) and the key, pointing at this
/// server, unless it exists.
fn write_client_config(paths: &Paths, env: &Env, url: &str, key: &Secret, ca: Option<&Path>, out: &Printer) {
    if paths.config_file().exists() {
        return;
    }
    match settings::save_login(paths, env, url, key, ca) {
        Ok(notice) => {
            out.status(format!(
                "wrote a client config pointing at {url} to `{}`",
                paths.config_file().display()
            ));
            out.status(format!("  {notice}"));
        }
        Err(err) => out.warn(format!(
            "cannot write a client config: {}",
            crate::error::render(&err.into())
        )),
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    fn bad<'a>(path: &'a Path, what: &'a str) -> impl Fn(rustls_pki_types::pem::Error) -> Error + 'a {
        move |e| {
            Error::failed_with_hint(
                format!("cannot read {what} from `{}`: {e}", path.display()),
                "expected a PEM file",
            )
        }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(bad(cert, "certificates"))?
        .collect::<Result<_, _>>()
        .map_err(bad(cert, "certificates"))?;
    if certs.is_empty() {
        return Err(Error::failed_with_hint(
            format!("`{}` holds no certificate", cert.display()),
            "expected a PEM file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(bad(key, "a private key"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::failed(format!("the TLS certificate and key do not work together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` — over TLS when there is an `acceptor` — until `shutdown`: then it
/// stops accepting and waits for the requests in flight, at most [`SHUTDOWN_GRACE`] (a stream that
/// would not end does not keep `lap serve` running). Each request carries its peer's address
/// (`ConnectInfo`: `/metrics` is open to loopback peers only).
async fn serve_connections(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    use hyper_util::server::graceful::GracefulShutdown;
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // `EMFILE` stays until a descriptor frees: rest instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // A keystroke's echo or a small answer goes out at once, not after the last one's ACK.
        let _ = tcp.set_nodelay(true);
        let with_peer = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(tcp, service, watcher, peer).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_connection(tls, service, watcher, peer).await,
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish within {SHUTDOWN_GRACE:?}");
    }
}

/// One HTTP/1 or HTTP/2 connection (with upgrades: the terminal's WebSocket), watched for shutdown.
async fn serve_connection(
    io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    service: hyper_util::service::TowerToHyperService<axum::Router>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Binds the preview listener (`--preview-listen`, see its help for the default) and says where
/// previews are served; returns it with the preview origin's base URL and the preview key, or `None`
/// for `--preview-listen off`. Refuses a preview origin that is the API's.
async fn preview_listener(
    args: &Args,
    api: SocketAddr,
    api_url: &str,
    data_dir: &Path,
    out: &Printer,
) -> Result<Option<(TcpListener, String, [u8; 32])>, Error> {
    let listener = match args.preview_listen.as_deref() {
        Some("off") => return Ok(None),
        Some(addr) => {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                Error::usage(
                    format!("`--preview-listen {addr}` is not an address"),
                    "e.g. `127.0.0.1:3001`, or `off`",
                )
            })?;
            if addr == api {
                return Err(Error::usage(
                    "the preview listener must not be the API's",
                    "previews are hostile content: give them their own port with `--preview-listen`",
                ));
            }
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("cannot listen for previews on {addr}"), e))?
        }
        None => {
            let next = SocketAddr::new(api.ip(), if api.port() == 0 { 0 } else { api.port().wrapping_add(1) });
            match TcpListener::bind(next).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::info!(error = %err, "the default preview port is taken; previews take a free port");
                    TcpListener::bind(SocketAddr::new(api.ip(), 0))
                        .await
                        .map_err(|e| Error::io("cannot listen for previews", e))?
                }
            }
        }
    };
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the preview listener's address", e))?;
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    let host = match local.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let base = match &args.preview_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("{scheme}://{host}:{}", local.port()),
    };
    let origin = |url: &str| reqwest::Url::parse(url).ok().map(|u| u.origin().ascii_serialization());
    if origin(&base).is_none() {
        return Err(Error::usage(
            format!("`--preview-url {base}` is not a URL"),
            "e.g. `https://preview.example.com`",
        ));
    }
    if origin(&base) == origin(api_url) {
        return Err(Error::usage(
            format!("the preview origin `{base}` is the API's"),
            "previews are hostile content and need an origin of their own: another host name or port",
        ));
    }
    let key = crate::control::ports::load_or_create_key(data_dir).map_err(|e| Error::failed(e.to_string()))?;
    out.status(format!("lap serve previews on {base} (bound to {local})"));
    Ok(Some((listener, base, key)))
}

async fn watch_signals(shutdown: CancellationToken) {
    match crate::platform::shutdown_signal().await {
        Ok(name) => tracing::info!("{name}: shutting down"),
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            return;
        }
    }
    shutdown.cancel();
}
