//! Sessions on `lap serve --backend kube`, end to end on one machine: the server (a real process)
//! talks by kubeconfig to the in-process fake API server of `kube_fake`, and the test plays the
//! kubelet: when a pod's Secret appears it starts the pod's containers as real processes — the
//! harness container as `lap harness --listen`, the vault container as `lap vault sidecar` with the
//! CA and admin token from that Secret — connects port-forwards to them, and reports a container
//! that exits in the pod's status, as a kubelet would. On that, the scenarios the local backend
//! passes: a session becomes `ready`, `lap exec` runs in it, its credential is swapped in the
//! sidecar toward its host only (a loopback HTTPS upstream; nothing leaves 127.0.0.1) and the
//! sidecar's records reach the egress log, exactly once across a restart of `lap serve`; a person
//! attaches with `lap <agent>` in tmux, types, resizes, and the agent's exit ends the session; the
//! warm pool's pod is claimed by a label patch and replaced; the real `claude` answers `lap send`
//! through the pod's harness, in a pod with a network and mounts of its own whose only way out is
//! its vault; pods that fail (OOM kill, a crash, an image that cannot be pulled,
//! deletion behind lap's back, a warm pod evicted) end their sessions, or leave the pool, with the
//! reason; a `kill -9` of `lap serve` mid bring-up leaves no pod behind; idle sessions are reaped;
//! a server started while the API server is down takes no session until it answers, then recovers;
//! and with `--kube-reach pod-ip` (each pod on an address of its own in 127.0.0.0/8) all of
//! it works without a port-forward. The pod's harness wants its token from the Secret.
//!
//! With `--kube-vault gateway` the pods hold only their harness, isolated, each with an IP of its
//! own on the loopback, and the kubelet here relays a pod's `127.0.0.1:3128` to `lap serve`'s vault
//! gateway from that IP: the real `claude` answers with its key swapped by the gateway, a warm pod
//! is claimed and swapped, a pod's route is made again after a `kill -9` restart of `lap serve`,
//! and every wrong, missing or other session's proxy credential, and the right one from another
//! address, is refused with nothing reaching the upstream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine;
use lap::sandbox::kube::manifest;
use lap::vault::ca::CertificateAuthority;
use serde_json::{Value, json};

use crate::kube_fake;
use crate::kube_fake::FakeApi;
use crate::support;
use crate::support::tmux::Tmux;
use crate::support::upstream::upstream;
use crate::support::{Home, TestServer, addr_after, spawn_first_line};

const LAP: &str = env!("CARGO_BIN_EXE_lap");
const REAL: &str = "ghp_real_value_kube_e2e";
const WAIT: Duration = Duration::from_secs(60);

fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim_end() == line)
}

/// The processes the fake kubelet started, killed when the test ends.
#[derive(Default)]
struct Containers {
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
    /// Each pod's vault proxy address and the CA bundle its harness is given (its Secret's
    /// `ca-bundle.pem`: the system roots and the pod's own CA), by pod name.
    proxies: Vec<(String, SocketAddr, PathBuf)>,
    /// Each pod's harness process id, by pod name.
    harnesses: Vec<(String, u32)>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn secret_file(secret: &Value, key: &str) -> Vec<u8> {
    let data = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the secret has no `{key}`"));
    base64::engine::general_purpose::STANDARD.decode(data).unwrap()
}

/// What the fake kubelet needs to run a pod: where upstream HTTPS is and whom it trusts, for a
/// cluster whose pods are reached by IP, the addresses it hands out, and where the fake CSI driver
/// keeps its volumes ([`csi_driver`]).
struct Upstream {
    port: u16,
    ca_pem: PathBuf,
    pod_ips: Option<PodIps>,
    /// A fake vendor API (a host and the loopback address its port 443 is on, TLS from the same CA)
    /// that the pods' vaults send that host to. With one, each pod is isolated as a real pod is
    /// ([`isolated_harness`]), so that a real agent CLI in it reaches the vendor only through its
    /// vault.
    vendor: Option<(&'static str, std::net::Ipv4Addr)>,
    csi: PathBuf,
    /// With `--kube-vault gateway`: where `lap serve`'s vault gateway listens, once it has started.
    gateway: Option<Arc<std::sync::OnceLock<SocketAddr>>>,
}

/// The test's CSI driver and snapshot controller: a claim is a directory `claims/<name>` (a clone
/// starts as a copy of its source claim's, a restore as a copy of the snapshot's), a VolumeSnapshot a
/// copy `snapshots/<name>` of its claim's directory at the time it is taken.
fn csi_driver(api: &FakeApi, root: &Path) {
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
        assert!(status.success(), "cp -a {} {}", from.display(), to.display());
    };
    let claims = root.join("claims");
    let snapshots = root.join("snapshots");
    std::fs::create_dir_all(&claims).unwrap();
    std::fs::create_dir_all(&snapshots).unwrap();
    let (c, s) = (claims.clone(), snapshots.clone());
    api.on_create("persistentvolumeclaims", move |claim| {
        let name = claim["metadata"]["name"].as_str().unwrap();
        let source = &claim["spec"]["dataSource"];
        match (source["kind"].as_str(), source["name"].as_str()) {
            (Some("PersistentVolumeClaim"), Some(from)) => copy(&c.join(from), &c.join(name)),
            (Some("VolumeSnapshot"), Some(from)) => copy(&s.join(from), &c.join(name)),
            _ => std::fs::create_dir_all(c.join(name).join("home")).unwrap(),
        }
    });
    api.on_create("volumesnapshots", move |snapshot| {
        let name = snapshot["metadata"]["name"].as_str().unwrap();
        let claim = snapshot["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap();
        if claims.join(claim).exists() {
            copy(&claims.join(claim), &snapshots.join(name));
        }
    });
}

/// The directory of the claim pod `pod` mounts at `/work`, if it mounts one.
fn claim_dir(pod: &Value, csi: &Path) -> Option<PathBuf> {
    let volumes = pod["spec"]["volumes"].as_array()?;
    let work = volumes.iter().find(|v| v["name"] == "work")?;
    let claim = work["persistentVolumeClaim"]["claimName"].as_str()?;
    Some(csi.join("claims").join(claim))
}

/// Pod IPs on the host's loopback (all of 127.0.0.0/8 is loopback on Linux): `127.A.B.n`, with `A.B`
/// from this test process's id so concurrent test processes use different ones, and `n` counting.
struct PodIps {
    prefix: String,
    next: std::sync::atomic::AtomicU8,
}

impl PodIps {
    fn new() -> Self {
        let pid = std::process::id();
        Self {
            prefix: format!("127.{}.{}", 1 + (pid / 250) % 250, pid % 250),
            next: std::sync::atomic::AtomicU8::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!((1..255).contains(&n), "out of pod IPs");
        format!("{}.{n}", self.prefix)
    }
}

/// Starts one pod's harness and vault containers; returns where its harness and admin ports are.
fn run_pod(
    pod: &Value,
    secret: &Value,
    upstream: &Upstream,
    api: &FakeApi,
    containers: &Weak<Mutex<Containers>>,
) -> Vec<(u16, SocketAddr)> {
    if upstream.gateway.is_some() {
        return run_gateway_pod(pod, secret, upstream, api, containers);
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    for key in [manifest::keys::CA_CERT, manifest::keys::CA_KEY] {
        std::fs::write(ca_dir.join(key), secret_file(secret, key)).unwrap();
    }
    let binding = dir.path().join(manifest::keys::BINDING);
    std::fs::write(&binding, secret_file(secret, manifest::keys::BINDING)).unwrap();
    let token = dir.path().join(manifest::keys::ADMIN_TOKEN);
    std::fs::write(&token, secret_file(secret, manifest::keys::ADMIN_TOKEN)).unwrap();
    let harness_token = dir.path().join(manifest::keys::HARNESS_TOKEN);
    std::fs::write(&harness_token, secret_file(secret, manifest::keys::HARNESS_TOKEN)).unwrap();
    let bundle = dir.path().join(manifest::keys::CA_BUNDLE);
    std::fs::write(&bundle, secret_file(secret, manifest::keys::CA_BUNDLE)).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Reached by port-forward: any free port on 127.0.0.1. By pod IP: the pod's own ports on it.
    let pod_ip = upstream.pod_ips.as_ref().map(PodIps::next);
    let (harness_listen, admin_listen) = match &pod_ip {
        Some(ip) => (
            format!("{ip}:{}", manifest::HARNESS_PORT),
            format!("{ip}:{}", manifest::ADMIN_PORT),
        ),
        None => ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
    };

    let mut vault = Command::new(LAP);
    vault
        .args([
            "vault",
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            &admin_listen,
            "--ca-dir",
        ])
        .arg(&ca_dir)
        .arg("--binding")
        .arg(&binding)
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--vault-upstream-ca")
        .arg(&upstream.ca_pem)
        .args([
            "--vault-resolve",
            &format!("api.github.test:{}:127.0.0.1", upstream.port),
        ])
        .args([
            "--vault-resolve",
            &format!("api.other.test:{}:127.0.0.1", upstream.port),
        ])
        .env_clear()
        .env("PATH", &path);
    if let Some((host, addr)) = upstream.vendor {
        vault.args(["--vault-resolve", &format!("{host}:443:{addr}")]);
    }
    let (vault, line) = spawn_first_line(vault);
    let (proxy, admin) = (addr_after(&line, "proxy on "), addr_after(&line, "admin on "));

    // The harness container: the pod's command, but on a port of the host's loopback and with a
    // home of its own (a pod has `/work/home` to itself).
    let command = pod["spec"]["containers"][0]["command"].as_array().unwrap();
    assert_eq!(command[..3], ["lap", "harness", "--listen"], "{command:?}");
    assert_eq!(command[4], "--token-file", "{command:?}");
    // With a workspace claim, the home is on the claim's volume (`/work/home`), else the pod's own.
    let home = claim_dir(pod, &upstream.csi).map_or_else(|| dir.path().join("home"), |claim| claim.join("home"));
    let (harness, harness_addr) = if upstream.vendor.is_some() {
        isolated_harness(&home, &harness_token, &bundle, move || {
            std::net::TcpStream::connect(proxy)
        })
    } else {
        let mut harness = Command::new(LAP);
        harness
            .args(["harness", "--listen", &harness_listen, "--token-file"])
            .arg(&harness_token)
            .arg("--home")
            .arg(&home)
            .env_clear()
            .env("PATH", &path)
            .env("TERM", "screen");
        let (harness, line) = spawn_first_line(harness);
        (harness, addr_after(&line, "listening on "))
    };

    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let pid = harness.id();
    let Some(containers) = containers.upgrade() else {
        return Vec::new();
    };
    {
        let mut containers = containers.lock().unwrap();
        containers.children.extend([vault, harness]);
        containers.proxies.push((name.clone(), proxy, bundle));
        containers.dirs.push(dir);
        containers.harnesses.push((name.clone(), pid));
    }
    if let Some(ip) = &pod_ip {
        api.set_pod_ip(&name, ip);
    }
    report_exit(api.clone(), Arc::downgrade(&containers), name, pid);
    vec![(manifest::HARNESS_PORT, harness_addr), (manifest::ADMIN_PORT, admin)]
}

/// A gateway-mode pod (`--kube-vault gateway`): its one container, the harness, isolated as a real
/// pod is ([`isolated_harness`]), with an IP of its own (`127.A.B.n`, in its status). The pod's
/// `127.0.0.1:PROXY_PORT`, where its `HTTPS_PROXY` points (the test's `--kube-gateway-addr`), is
/// relayed to `lap serve`'s gateway *from the pod's IP*, as the pod network carries a pod's
/// connection to the `lap serve` Service with the pod's address as its source. The Secret has no
/// vault part: the harness trusts its `ca-bundle.pem` (the system roots and `lap serve`'s CA
/// certificate) and wants its `harness-token`.
fn run_gateway_pod(
    pod: &Value,
    secret: &Value,
    upstream: &Upstream,
    api: &FakeApi,
    containers: &Weak<Mutex<Containers>>,
) -> Vec<(u16, SocketAddr)> {
    let containers_of_pod = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers_of_pod.len(),
        1,
        "a gateway pod holds only the harness: {pod}"
    );
    assert!(pod["spec"].get("initContainers").is_none(), "{pod}");
    let dir = tempfile::tempdir().unwrap();
    let harness_token = dir.path().join(manifest::keys::HARNESS_TOKEN);
    std::fs::write(&harness_token, secret_file(secret, manifest::keys::HARNESS_TOKEN)).unwrap();
    let bundle = dir.path().join(manifest::keys::CA_BUNDLE);
    std::fs::write(&bundle, secret_file(secret, manifest::keys::CA_BUNDLE)).unwrap();
    let ip = upstream.pod_ips.as_ref().expect("gateway pods have IPs").next();
    let source: std::net::IpAddr = ip.parse().unwrap();
    let gateway = *upstream
        .gateway
        .as_ref()
        .and_then(|g| g.get())
        .expect("lap serve's gateway listens before any pod is made");
    let home = claim_dir(pod, &upstream.csi).map_or_else(|| dir.path().join("home"), |claim| claim.join("home"));
    let (harness, harness_addr) = isolated_harness(&home, &harness_token, &bundle, move || dial_from(source, gateway));
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let pid = harness.id();
    let Some(containers) = containers.upgrade() else {
        return Vec::new();
    };
    {
        let mut containers = containers.lock().unwrap();
        containers.children.push(harness);
        containers.proxies.push((name.clone(), gateway, bundle));
        containers.dirs.push(dir);
        containers.harnesses.push((name.clone(), pid));
    }
    api.set_pod_ip(&name, &ip);
    report_exit(api.clone(), Arc::downgrade(&containers), name, pid);
    vec![(manifest::HARNESS_PORT, harness_addr)]
}

/// A TCP connection to `to` whose source address is `source` (a pod's IP on the loopback).
fn dial_from(source: std::net::IpAddr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    tokio::runtime::Handle::current()
        .block_on(socket.connect(to))?
        .into_std()
}

/// The harness container of a pod that has its network and mounts to itself, as a real pod has:
/// `lap harness` (its home `home`) in network and mount namespaces of its own (`unshare`, root
/// only), its loopback up and the pod's CA bundle (`bundle`, from its Secret: the host's roots and
/// the pod's own vault CA) mounted over the system one, as the pod's Secret volume is. The pod's `127.0.0.1:PROXY_PORT` leads to its vault
/// (each connection to one `dial` makes: its vault container's proxy on the host's loopback, or
/// `lap serve`'s gateway), which is the only way out of it; its harness port is relayed to the
/// host's loopback for the port-forward. Returns the process and that address.
fn isolated_harness(
    home: &Path,
    token: &Path,
    bundle: &Path,
    dial: impl Fn() -> std::io::Result<std::net::TcpStream> + Send + Sync + 'static,
) -> (Child, SocketAddr) {
    let mut harness = Command::new("unshare");
    harness
        .args(["--net", "--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "ip link set lo up && mount --bind \"$BUNDLE\" {SYSTEM_CA_BUNDLE} && exec \"$@\""
        ))
        .args(["sh", LAP, "harness", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(token)
        .arg("--home")
        .arg(home)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default()),
        )
        .env("TERM", "screen")
        .env("BUNDLE", bundle);
    let (harness, line) = spawn_first_line(harness);
    let inside = addr_after(&line, "listening on ");
    // `unshare` and `sh` exec: the harness's process is the one started, in the pod's namespace.
    let netns = PathBuf::from(format!("/proc/{}/ns/net", harness.id()));
    let egress = in_netns(&netns, || {
        std::net::TcpListener::bind(("127.0.0.1", manifest::PROXY_PORT))
    })
    .expect("the pod's proxy port");
    relay(egress, dial);
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = outside.local_addr().unwrap();
    relay(outside, move || {
        in_netns(&netns, move || std::net::TcpStream::connect(inside))
    });
    (harness, addr)
}

/// The system's CA bundle, where the sandbox environment points every tool
/// ([`lap::sandbox::CA_BUNDLE_PATH`]).
const SYSTEM_CA_BUNDLE: &str = lap::sandbox::CA_BUNDLE_PATH;

/// `make` run in the network namespace `netns` (a socket stays in the namespace it was made in).
fn in_netns<T: Send + 'static>(
    netns: &Path,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        make()
    })
    .join()
    .expect("the namespace thread")
}

/// Accepts on `listener` until the test ends; each connection is spliced to one from `dial`.
fn relay(
    listener: std::net::TcpListener,
    dial: impl Fn() -> std::io::Result<std::net::TcpStream> + Send + Sync + 'static,
) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let dial = Arc::new(dial);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let dial = dial.clone();
            tokio::spawn(async move {
                let Ok(Ok(outbound)) = tokio::task::spawn_blocking(move || dial()).await else {
                    return;
                };
                outbound.set_nonblocking(true).unwrap();
                let mut outbound = tokio::net::TcpStream::from_std(outbound).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// The kubelet's part after start: when a pod's harness process exits, the pod's status says so
/// (the container terminated with its exit code, 128 + the signal for a killed one), as a
/// kubelet's status update would. Stops when the pod or the test is gone.
fn report_exit(api: FakeApi, containers: Weak<Mutex<Containers>>, pod: String, pid: u32) {
    use std::os::unix::process::ExitStatusExt;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let Some(object) = api.get("pods", &pod) else {
                return;
            };
            let Some(containers) = containers.upgrade() else {
                return;
            };
            let exited = {
                let mut containers = containers.lock().unwrap();
                let Some(child) = containers.children.iter_mut().find(|c| c.id() == pid) else {
                    return;
                };
                child.try_wait().ok().flatten()
            };
            if let Some(exit) = exited {
                let code = exit.code().unwrap_or_else(|| 128 + exit.signal().unwrap_or(0));
                let mut status = kube_fake::ready_status(&object);
                status["containerStatuses"][0]["ready"] = json!(false);
                status["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": code, "reason": "Error"}});
                api.set_pod_status(&pod, status);
                return;
            }
        }
    });
}

fn kubeconfig(dir: &Path, api_url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {api_url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: lap\n\
             users:\n- name: fake\n  user:\n    token: not-a-real-token\n"
        ),
    )
    .unwrap();
    path
}

/// A fake vendor API for [`Cluster::start_full`]: its host, its answers, and where what it saw goes.
type Vendor = (
    &'static str,
    support::vendor::Handler,
    Arc<Mutex<Vec<support::vendor::Seen>>>,
);

/// A fake cluster with a playing kubelet, a loopback HTTPS upstream (`api.github.test`,
/// `api.other.test`), and a real `lap serve --backend kube` on it.
struct Cluster {
    api: FakeApi,
    api_url: String,
    containers: Arc<Mutex<Containers>>,
    /// What the upstream received.
    seen: Arc<Mutex<Vec<support::upstream::Seen>>>,
    upstream_port: u16,
    home: Home,
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster whose pods `lap serve` reaches by port-forward.
    async fn start(serve_args: &[&str]) -> Self {
        Self::start_with(serve_args, false).await
    }

    /// A cluster with `by_pod_ip`: each pod gets an IP of its own (on the host's loopback) and
    /// serves its harness and admin ports there.
    async fn start_with(serve_args: &[&str], by_pod_ip: bool) -> Self {
        Self::start_full(serve_args, by_pod_ip, None).await
    }

    /// A cluster whose pods are isolated as real ones ([`isolated_harness`]) and whose vaults send
    /// `host` to a fake vendor API answering with `handler` (TLS on a loopback address's port 443);
    /// returns what that API saw, too.
    async fn start_isolated(
        serve_args: &[&str],
        host: &'static str,
        handler: support::vendor::Handler,
    ) -> (Self, Arc<Mutex<Vec<support::vendor::Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cluster = Self::start_full(serve_args, false, Some((host, handler, seen.clone()))).await;
        (cluster, seen)
    }

    async fn start_full(serve_args: &[&str], by_pod_ip: bool, vendor: Option<Vendor>) -> Self {
        Self::start_mode(serve_args, by_pod_ip, vendor, false).await
    }

    /// A cluster on `lap serve --kube-vault gateway`: every pod is isolated and has an IP of its
    /// own ([`run_gateway_pod`]), and `lap serve`'s vault, through its gateway, sends the test's
    /// hosts (and `vendor`'s) to the loopback upstreams. Returns what the vendor API saw, too.
    async fn start_gateway(
        serve_args: &[&str],
        vendor: Option<(&'static str, support::vendor::Handler)>,
    ) -> (Self, Arc<Mutex<Vec<support::vendor::Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let vendor = vendor.map(|(host, handler)| (host, handler, seen.clone()));
        (Self::start_mode(serve_args, false, vendor, true).await, seen)
    }

    async fn start_mode(serve_args: &[&str], by_pod_ip: bool, vendor: Option<Vendor>, gateway: bool) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let ca_pem = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_pem, public_ca.cert_pem()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream_port = upstream(public_ca.clone(), seen.clone(), true).await;
        let vendor = match vendor {
            Some((host, handler, seen)) => {
                let hangs_ended = Arc::new(Mutex::new(0));
                Some((
                    host,
                    support::vendor::serve(public_ca, seen, hangs_ended, handler).await,
                ))
            }
            None => None,
        };
        let csi = dir.path().join("csi");
        let gateway_addr = gateway.then(|| Arc::new(std::sync::OnceLock::new()));
        let mut serve_args: Vec<String> = serve_args.iter().map(|a| (*a).to_owned()).collect();
        if gateway {
            // The gateway on a free port of the host's loopback, the same one across a restart of
            // `lap serve` (as a Service's port is); pods dial their own `127.0.0.1:PROXY_PORT`,
            // which the kubelet here relays to it from the pod's IP.
            let free = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            serve_args.extend(
                [
                    "--kube-vault",
                    "gateway",
                    "--kube-gateway-listen",
                    &free.to_string(),
                    "--kube-gateway-addr",
                    &format!("127.0.0.1:{}", manifest::PROXY_PORT),
                    "--vault-upstream-ca",
                    &ca_pem.display().to_string(),
                    "--vault-resolve",
                    &format!("api.github.test:{upstream_port}:127.0.0.1"),
                    "--vault-resolve",
                    &format!("api.other.test:{upstream_port}:127.0.0.1"),
                ]
                .map(str::to_owned),
            );
            if let Some((host, addr)) = vendor {
                serve_args.extend(["--vault-resolve".to_owned(), format!("{host}:443:{addr}")]);
            }
        }
        let upstream = Upstream {
            port: upstream_port,
            ca_pem,
            pod_ips: (by_pod_ip || gateway).then(PodIps::new),
            vendor,
            csi: csi.clone(),
            gateway: gateway_addr.clone(),
        };
        let (api, api_url) = FakeApi::start().await;
        csi_driver(&api, &csi);
        let containers = Arc::new(Mutex::new(Containers::default()));
        let (kubelet, kubelet_api) = (Arc::downgrade(&containers), api.clone());
        api.run_pods_with(move |pod, secret| run_pod(pod, secret, &upstream, &kubelet_api, &kubelet));
        let home = Home::new();
        let config = kubeconfig(dir.path(), &api_url);
        // Blocking calls on this worker are fine: the fake API server answers on the others.
        let server = TestServer::start_kube(&home, &config, serve_args);
        if let Some(addr) = &gateway_addr {
            let _ = addr.set(addr_after(&server.startup, "kube vault gateway on "));
        }
        Self {
            api,
            api_url,
            containers,
            seen,
            upstream_port,
            home,
            server,
            _dir: dir,
        }
    }

    fn lap_json(&self, args: &[&str]) -> Value {
        self.home.lap().env("GITHUB_TOKEN", REAL).run(args).success().json()
    }

    fn create_agent(&self, name: &str) {
        self.lap_json(&[
            "--json",
            "agents",
            "create",
            name,
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN@api.github.test",
        ]);
    }

    fn show(&self, id: &str) -> Value {
        self.lap_json(&["--json", "sessions", "show", id])
    }

    /// Polls session `id` until `done` holds; returns it.
    async fn session_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        support::wait_until_async(&format!("session {id} {what}"), WAIT, || async {
            let shown = self.show(id);
            if done(&shown) { Ok(shown) } else { Err(shown) }
        })
        .await
    }

    /// Creates a session of `agent` and waits until it is `ready`; returns its id and pod.
    async fn ready_session(&self, agent: &str) -> (String, String) {
        let session = self.lap_json(&["--json", "sessions", "create", agent]);
        let id = session["id"].as_str().unwrap().to_owned();
        let shown = self.session_until(&id, "settled", |s| s["status"] != "creating").await;
        assert_eq!(shown["status"], "ready", "{shown}\n{}", self.server.log());
        (id, pod_of(&shown))
    }

    /// Polls the fake API until `done` holds of the pods' names.
    async fn pods_until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        support::wait_until_async(&format!("the pods {what}"), WAIT, || async {
            let pods = self.api.names("pods");
            if done(&pods) {
                Ok(pods)
            } else {
                Err(format!("{pods:?}"))
            }
        })
        .await
    }

    /// The pod's vault proxy and the CA bundle its harness trusts.
    fn proxy_of(&self, pod: &str) -> (SocketAddr, PathBuf) {
        let containers = self.containers.lock().unwrap();
        let (_, proxy, ca) = containers.proxies.iter().find(|(name, ..)| name == pod).unwrap();
        (*proxy, ca.clone())
    }

    /// `curl` in session `id` through its pod's vault to `host`: the HTTP status.
    fn curl(&self, id: &str, pod: &str, host: &str) -> String {
        let (_, bundle) = self.proxy_of(pod);
        let out = self.curl_trusting(id, pod, &bundle, host);
        assert_eq!(out.code, 0, "{out}");
        out.stdout
    }

    /// `curl` in session `id` through its pod's vault to `host`, trusting only the CA bundle `bundle`.
    fn curl_trusting(&self, id: &str, pod: &str, bundle: &Path, host: &str) -> support::Run {
        let (proxy, _) = self.proxy_of(pod);
        let curl = format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' --proxy http://{proxy} --cacert {} \
             -H \"Authorization: Bearer $GITHUB_TOKEN\" https://{host}:{}/user",
            bundle.display(),
            self.upstream_port,
        );
        self.home.lap().run(["exec", id, "--", "sh", "-c", &curl])
    }

    /// Session `id`'s egress log once it holds at least `n` records.
    async fn egress(&self, id: &str, n: usize) -> Vec<Value> {
        self.egress_until(id, |records| records.len() >= n).await
    }

    /// Session `id`'s egress log once `done` holds of it.
    async fn egress_until(&self, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        support::wait_until_async("the egress log", WAIT, || async {
            let records = self.lap_json(&["--json", "sessions", "egress", id]);
            let records = records.as_array().unwrap().clone();
            if done(&records) {
                Ok(records)
            } else {
                Err(format!("{records:?}"))
            }
        })
        .await
    }

    /// The kube API as `kubectl` would use it, namespace `lap`.
    fn pods(&self) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
        kube::Api::namespaced(FakeApi::client(&self.api_url), "lap")
    }
}

fn pod_of(shown: &Value) -> String {
    let url = shown["sandbox_url"].as_str().unwrap_or_default();
    url.strip_prefix("kube://lap/")
        .unwrap_or_else(|| panic!("not a kube sandbox: {shown}"))
        .to_owned()
}

fn oom_killed() -> Value {
    json!({"phase": "Running", "containerStatuses": [{"name": "harness", "ready": false,
        "restartCount": 0, "image": "lap-sandbox:dev", "imageID": "",
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_on_the_kube_backend_becomes_ready_runs_commands_and_swaps_its_credential_in_the_sidecar() {
    let cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    // Outside a cluster, `auto` reaches pods through port-forward.
    assert!(
        cluster
            .server
            .startup
            .contains("pods reached through the API server's port-forward"),
        "{}",
        cluster.server.startup
    );
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    assert!(cluster.api.names("pods").contains(&pod));

    // `lap exec` runs in the pod's harness, with the session's environment: the stub, never the value.
    let out = cluster.home.lap().run([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "printf '%s\\n' \"$GITHUB_TOKEN\"; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out}");
    let stub = out.stdout.trim().to_owned();
    assert!(stub.starts_with("stub_") && !stub.contains(REAL), "{out}");
    assert_eq!(out.stderr, "oops\n", "{out}");

    // The binding went into the pod's Secret and, live, into its sidecar.
    let secret = cluster.api.get("secrets", &format!("{pod}-vault")).unwrap();
    let binding: Value = serde_json::from_slice(&secret_file(&secret, manifest::keys::BINDING)).unwrap();
    assert_eq!(binding["credentials"][0]["stub"], stub.as_str());
    assert_eq!(binding["credentials"][0]["value"], REAL);

    // Through the sidecar's proxy: swapped toward the bound host; toward another the stub is
    // refused by the vault and reaches nothing.
    assert_eq!(cluster.curl(&id, &pod, "api.github.test"), "200");
    assert_eq!(cluster.curl(&id, &pod, "api.other.test"), "403");
    {
        let seen = cluster.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "api.other.test must receive nothing: {seen:?}");
        assert!(seen[0].host.starts_with("api.github.test"), "{seen:?}");
        assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {REAL}").as_str()));
    }

    // The sidecar's records reach the session's egress log.
    let records = cluster.egress(&id, 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0]["host"].as_str(), &records[0]["swapped"]),
        (Some("api.github.test"), &json!(["GITHUB_TOKEN"]))
    );
    assert_eq!(records[1]["host"], "api.other.test");
    assert!(
        records[1]["blocked"].as_str().unwrap().contains("not bound"),
        "{}",
        records[1]
    );
    assert!(!serde_json::to_string(&records).unwrap().contains(REAL));
}

/// Every value of every Secret in the fake cluster, decoded.
fn secret_values(api: &FakeApi) -> Vec<(String, Vec<u8>)> {
    let mut values = Vec::new();
    for name in api.names("secrets") {
        let secret = api.get("secrets", &name).unwrap();
        for key in secret["data"].as_object().unwrap().keys() {
            values.push((format!("{name}/{key}"), secret_file(&secret, key)));
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_pod_signs_with_a_ca_of_its_own_and_lap_serves_ca_key_is_in_no_pod() {
    let mut cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    let (a, pod_a) = cluster.ready_session("coder").await;
    let (_b, pod_b) = cluster.ready_session("coder").await;
    // The data dir holds a CA from the server's first start, on another backend (as a run on the
    // local backend leaves one): a kube server in sidecar mode neither uses nor trusts it.
    let serve_ca = cluster.server.data_dir().join("vault");
    let (left_key, left_cert) = (
        std::fs::read(serve_ca.join("ca.key")).unwrap(),
        std::fs::read(serve_ca.join("ca.pem")).unwrap(),
    );
    let no_left_ca_in_any_secret = |api: &FakeApi| {
        for (place, value) in secret_values(api) {
            assert!(!contains(&value, &left_key), "the data dir's CA key is in `{place}`");
            assert!(
                !contains(&value, &left_cert),
                "the data dir's CA is trusted in `{place}`"
            );
        }
    };
    no_left_ca_in_any_secret(&cluster.api);
    let secret = |pod: &str| cluster.api.get("secrets", &format!("{pod}-vault")).unwrap();
    let (secret_a, secret_b) = (secret(&pod_a), secret(&pod_b));
    let key = |secret: &Value| secret_file(secret, manifest::keys::CA_KEY);
    let cert = |secret: &Value| secret_file(secret, manifest::keys::CA_CERT);
    let bundle = |secret: &Value| secret_file(secret, manifest::keys::CA_BUNDLE);

    // Two pods, two CA keys.
    assert!(key(&secret_a).starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_ne!(key(&secret_a), key(&secret_b));
    // Each harness trusts its own pod's CA and not the other's.
    assert!(contains(&bundle(&secret_a), &cert(&secret_a)));
    assert!(!contains(&bundle(&secret_a), &cert(&secret_b)));
    assert!(!contains(&bundle(&secret_b), &cert(&secret_a)));

    // Pod A's sidecar's leaf is good under A's bundle and refused under B's: curl gives up on the
    // certificate (60) and the upstream receives nothing.
    let (_, bundle_b) = cluster.proxy_of(&pod_b);
    let out = cluster.curl_trusting(&a, &pod_a, &bundle_b, "api.github.test");
    assert_eq!(out.code, 60, "pod A's leaf verified under pod B's CA: {out}");
    assert!(cluster.seen.lock().unwrap().is_empty());
    assert_eq!(cluster.curl(&a, &pod_a, "api.github.test"), "200");

    // There is no one CA of the sandboxes to print.
    let out = cluster.home.lap().run(["vault", "ca"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("a CA made for that sandbox alone"), "{out}");
    assert!(out.stderr.contains("hint: "), "{out}");

    // In sidecar mode lap serve's vault signs for no sandbox, so it writes no CA: with the data
    // dir's gone, the restarted server makes none on disk, adopts the session under its pod's own
    // CA, and a new session's pod holds its own too.
    std::fs::remove_dir_all(&serve_ca).unwrap();
    cluster.server.restart();
    for file in ["ca.key", "ca.pem", "ca-bundle.pem"] {
        assert!(!serve_ca.join(file).exists(), "lap serve wrote `{file}`");
    }
    assert_eq!(cluster.show(&a)["status"], "ready");
    assert_eq!(key(&secret(&pod_a)), key(&secret_a));
    assert_eq!(cluster.curl(&a, &pod_a, "api.github.test"), "200");
    let (_c, pod_c) = cluster.ready_session("coder").await;
    assert!(contains(&bundle(&secret(&pod_c)), &cert(&secret(&pod_c))));
    assert_ne!(key(&secret(&pod_c)), key(&secret_a));
    no_left_ca_in_any_secret(&cluster.api);
}

/// Recovery binds the vaults of a restarted server's sessions side by side: with both sidecars'
/// port-forwards held unanswered, both bindings are asked for before either is answered (one after
/// another, the second would wait for the first forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_binds_its_sessions_vaults_again_side_by_side() {
    let mut cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    let (a, pod_a) = cluster.ready_session("coder").await;
    let (b, pod_b) = cluster.ready_session("coder").await;
    cluster.server.kill9();
    let mark = cluster.api.seen().len();
    for pod in [&pod_a, &pod_b] {
        cluster.api.hold_forwards(pod, manifest::ADMIN_PORT);
    }
    // Released once both bindings are in flight, or at the deadline whatever it saw.
    let api = cluster.api.clone();
    let forwards = [&pod_a, &pod_b].map(|pod| format!("GET /api/v1/namespaces/lap/pods/{pod}/portforward"));
    let releaser = std::thread::spawn(move || {
        let both = support::try_wait_until(Duration::from_secs(30), || {
            let seen = api.seen();
            forwards.iter().all(|forward| seen[mark..].contains(forward))
        });
        api.release_forwards();
        both
    });
    cluster.server.restart();
    let both = releaser.join().unwrap();
    assert!(
        both.is_ok(),
        "recovery asked for one binding only after the other was answered\n{}",
        cluster.server.log()
    );
    for session in [&a, &b] {
        assert_eq!(cluster.show(session)["status"], "ready");
    }
    assert_eq!(cluster.curl(&b, &pod_b, "api.github.test"), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_adopts_the_pod_its_terminal_and_keeps_each_sidecar_record_once() {
    let mut cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    assert_eq!(cluster.curl(&id, &pod, "api.github.test"), "200");
    assert_eq!(cluster.egress(&id, 1).await.len(), 1);

    // kill -9, start again: the session is adopted, its vault re-bound, and the pull goes on from
    // the record it had kept — the sidecar still holds that one, and it is not logged again.
    cluster.server.restart();
    let shown = cluster.show(&id);
    assert_eq!(shown["status"], "ready", "{shown}\n{}", cluster.server.log());
    // A request of another kind after the restart: once its record is in, a pull that started over
    // would have brought the first one again before it.
    assert_eq!(cluster.curl(&id, &pod, "api.other.test"), "403");
    let records = cluster
        .egress_until(&id, |records| records.iter().any(|r| r["host"] == "api.other.test"))
        .await;
    let hosts: Vec<&str> = records.iter().map(|r| r["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["api.github.test", "api.other.test"], "{records:?}");
    // The adopted agent's terminal is there too, and still watched: its exit ends the session.
    let out = cluster
        .home
        .lap()
        .stdin("echo after-$((1 + 1))\nexit 6\n")
        .run(["coder"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stdout.contains("after-2"), "{out}");
    let shown = cluster.session_until(&id, "dead", |s| s["status"] == "dead").await;
    assert_eq!(shown["failure_reason"], "the agent exited with code 6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_attaches_to_a_kube_session_in_tmux_types_resizes_and_the_agents_exit_ends_it() {
    let cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    let lap = format!("{} {LAP}", cluster.home.env_words());
    let tmux = Tmux::shell("kube-person", (100, 30), "");
    tmux.keys(&format!("{lap} coder; echo LAP-EXIT=$?\n"));
    tmux.keys("echo $((6 * 7))x; stty size\n");
    tmux.until("the agent's answer and the pane's size", |s| {
        has_line(s, "42x") && has_line(s, "30 100")
    });
    let sessions = cluster.lap_json(&["--json", "sessions", "list"]);
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    let pod = pod_of(&cluster.show(&id));

    // SIGWINCH reaches `lap`, which resizes the pod's PTY through the port-forward.
    tmux.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    support::wait_until("the PTY to take 40x120", WAIT, || {
        tmux.keys("clear; stty size\n");
        let screen = tmux.until("stty's answer after a clear", |s| {
            !s.contains("clear; stty size")
                && s.lines()
                    .any(|l| l.trim().split(' ').count() == 2 && l.trim().split(' ').all(|n| n.parse::<u16>().is_ok()))
        });
        if has_line(&screen, "40 120") {
            Ok(())
        } else {
            Err(screen)
        }
    });

    // The agent's exit is `lap`'s exit code, and it ends the session and its pod.
    tmux.keys("exit 5\n");
    tmux.until("lap's exit code", |s| s.contains("LAP-EXIT=5"));
    let shown = cluster.session_until(&id, "dead", |s| s["status"] == "dead").await;
    assert_eq!(shown["failure_reason"], "the agent exited with code 5", "{shown}");
    cluster
        .pods_until("the session's pod gone", |pods| !pods.contains(&pod))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_pod_is_claimed_by_label_patch_and_the_pool_makes_the_next() {
    let cluster = Cluster::start(&["--warm-pool-size", "1"]).await;
    cluster.create_agent("coder");
    // The pool warms for the harness in use: one pod labelled warm, with no session.
    let warm = cluster.pods_until("a warm pod", |pods| pods.len() == 1).await[0].clone();
    let warm_ready = || {
        let warm = cluster.lap_json(&["--json", "admin", "stats"]);
        warm["warm_pool"]["ready"] == 1
    };
    support::wait_until_async("the warm pod ready", WAIT, || async { warm_ready() }).await;
    let labels = cluster.api.get("pods", &warm).unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels[manifest::WARM], "true");
    assert!(labels.get(manifest::SESSION).is_none(), "{labels}");

    // A session claims it, ready at once, and the claim is on the pod's labels.
    let session = cluster.lap_json(&["--json", "sessions", "create", "coder"]);
    assert_eq!(session["status"], "ready", "{session}");
    let id = session["id"].as_str().unwrap();
    assert_eq!(pod_of(&session), warm);
    let labels = cluster.api.get("pods", &warm).unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels[manifest::WARM], "false");
    assert_eq!(labels[manifest::SESSION], id);
    assert!(
        cluster
            .api
            .seen()
            .iter()
            .any(|l| l == &format!("PATCH /api/v1/namespaces/lap/pods/{warm}")),
        "the claim is a patch of the pod"
    );

    // The warm pod's workspace claim is the session's now: owned by nothing, labelled with it.
    let claim = cluster
        .api
        .get("persistentvolumeclaims", &format!("{warm}-work"))
        .unwrap();
    assert!(claim["metadata"]["ownerReferences"].is_null(), "{claim}");
    assert_eq!(claim["metadata"]["labels"][manifest::SESSION], id);

    // The session has its stub bound late, and works.
    assert_eq!(cluster.curl(id, &warm, "api.github.test"), "200");
    let auth = cluster.authorizations()[0].clone();
    assert_eq!(auth.as_deref(), Some(format!("Bearer {REAL}").as_str()));
    // And the pool makes the next warm pod.
    cluster.pods_until("a new warm pod", |pods| pods.len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_that_fail_end_their_sessions_with_the_reason_and_are_deleted() {
    let cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");

    // The kubelet reports an OOM kill.
    let (oom, oom_pod) = cluster.ready_session("coder").await;
    cluster.api.set_pod_status(&oom_pod, oom_killed());
    let shown = cluster.session_until(&oom, "dead", |s| s["status"] == "dead").await;
    assert_eq!(
        shown["failure_reason"],
        "the sandbox failed: container `harness` ran out of memory (OOMKilled); raise the agent's memory limit"
    );
    cluster
        .pods_until("the OOM-killed pod gone", |pods| !pods.contains(&oom_pod))
        .await;

    // The harness process crashes (kill -9); the kubelet says it exited.
    let (crashed, crashed_pod) = cluster.ready_session("coder").await;
    let pid = {
        let containers = cluster.containers.lock().unwrap();
        containers
            .harnesses
            .iter()
            .find(|(pod, _)| *pod == crashed_pod)
            .unwrap()
            .1
    };
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let shown = cluster.session_until(&crashed, "dead", |s| s["status"] == "dead").await;
    assert_eq!(
        shown["failure_reason"],
        "the sandbox failed: container `harness` exited with code 137"
    );
    cluster
        .pods_until("the crashed pod gone", |pods| !pods.contains(&crashed_pod))
        .await;

    // Someone deletes the pod behind lap's back (`kubectl delete pod`).
    let (deleted, deleted_pod) = cluster.ready_session("coder").await;
    cluster.pods().delete(&deleted_pod, &Default::default()).await.unwrap();
    let shown = cluster.session_until(&deleted, "dead", |s| s["status"] == "dead").await;
    assert_eq!(shown["failure_reason"], "the sandbox was deleted outside lap");
    assert!(
        cluster
            .api
            .names("secrets")
            .iter()
            .all(|s| !s.starts_with(&deleted_pod))
    );

    // The image cannot be pulled: the session fails with the registry's message, nothing is left.
    cluster
        .api
        .new_pods_get(json!({"phase": "Pending", "containerStatuses": [{"name": "harness",
        "ready": false, "restartCount": 0, "image": "lap-sandbox:dev", "imageID": "",
        "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for lap-sandbox"}}}]}));
    let out = cluster.home.lap().run(["sessions", "create", "coder"]);
    assert_eq!(out.code, 1, "{out}");
    let reason = format!(
        "cannot pull the image of container `harness` (ErrImagePull): pull access denied for lap-sandbox; {}",
        lap::sandbox::kube::status::PULL_ADVICE
    );
    assert!(out.stderr.contains(&reason), "{out}");
    let sessions = cluster.lap_json(&["--json", "sessions", "list"]);
    let failed: Vec<&Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{sessions}");
    let shown = cluster.show(failed[0]["id"].as_str().unwrap());
    assert_eq!(shown["failure_reason"], format!("the sandbox backend failed: {reason}"));
    cluster.pods_until("no pods", <[String]>::is_empty).await;
    assert!(cluster.api.names("secrets").is_empty() && cluster.api.names("networkpolicies").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_of_lap_serve_mid_bring_up_fails_the_session_and_leaves_no_pod_behind() {
    let mut cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    // Pods that never get ready: the bring-up waits in `creating_sandbox`.
    cluster.api.new_pods_get(json!({"phase": "Pending"}));
    let session = cluster.lap_json(&["--json", "sessions", "create", "coder", "--no-wait"]);
    let id = session["id"].as_str().unwrap().to_owned();
    let pod = cluster.pods_until("the session's pod", |pods| pods.len() == 1).await[0].clone();
    assert_eq!(cluster.show(&id)["status"], "creating");
    cluster.server.kill9();
    cluster.server.restart();
    let shown = cluster.show(&id);
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(
        shown["failure_reason"],
        "bring-up was interrupted by a restart of lap serve"
    );
    cluster
        .pods_until("the orphaned pod deleted", |pods| !pods.contains(&pod))
        .await;
    assert!(cluster.api.names("secrets").is_empty() && cluster.api.names("networkpolicies").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_started_while_the_api_is_down_takes_no_session_until_it_answers_then_recovers() {
    let mut cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    cluster.api.set_down(true).await;
    cluster.server.restart();
    assert!(
        cluster
            .server
            .startup
            .contains("warning: the sandbox backend does not answer"),
        "{}",
        cluster.server.startup
    );
    // Nothing new while the sessions of before are not accounted for.
    let out = cluster.home.lap().run(["sessions", "create", "coder"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("lap serve has not recovered its sessions yet"),
        "{out}"
    );
    assert!(out.stderr.contains("hint: lap serve keeps trying"), "{out}");
    // The API answers again: recovery runs, the old session is adopted, new ones are taken.
    cluster.api.set_down(false).await;
    let created = support::wait_until_async("lap serve recovered", WAIT, || async {
        let out = cluster
            .home
            .lap()
            .env("GITHUB_TOKEN", REAL)
            .run(["sessions", "create", "coder"]);
        if out.code == 0 {
            return Ok(out.stdout.trim().to_owned());
        }
        assert!(out.stderr.contains("not recovered"), "{out}");
        Err(out)
    })
    .await;
    assert_eq!(cluster.show(&created)["status"], "ready");
    assert_eq!(cluster.show(&id)["status"], "ready");
    let out = cluster.home.lap().run(["exec", &id, "--", "echo", "adopted"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "adopted\n"), "{out}");
    assert!(cluster.api.names("pods").contains(&pod));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_kube_session_is_reaped_with_its_pod() {
    let cluster = Cluster::start(&["--warm-pool-size", "0", "--idle-ttl", "1s"]).await;
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    assert_eq!(cluster.claims_of(&id).len(), 1);
    // A claim of a session this server does not know (left by a crash, or deleted behind its
    // back): swept too.
    let stray = "0b5a1c2e-9999-4999-8999-000000000009";
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(FakeApi::client(&cluster.api_url), "lap");
    let orphan = manifest::workspace_claim(
        "lap",
        &manifest::session_claim_name(stray),
        manifest::claim_labels(Some(stray), None),
        None,
        "1Gi",
        manifest::ClaimSource::Empty,
        None,
    );
    claims.create(&Default::default(), &orphan).await.unwrap();
    let shown = cluster.session_until(&id, "reaped", |s| s["status"] == "dead").await;
    assert_eq!(shown["failure_reason"], "reaped after 1s without activity");
    cluster
        .pods_until("the reaped pod deleted", |pods| !pods.contains(&pod))
        .await;
    // The reaper's last step deletes the workspace claim with the session.
    support::wait_until_async("no claims left", WAIT, || async {
        if cluster.claims_of(&id).is_empty() && cluster.claims_of(stray).is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", cluster.api.names("persistentvolumeclaims")))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_pod_that_is_evicted_leaves_the_pool_and_is_replaced() {
    let cluster = Cluster::start(&["--warm-pool-size", "1"]).await;
    cluster.create_agent("coder");
    let warm = cluster.pods_until("a warm pod", |pods| pods.len() == 1).await[0].clone();
    let stats = || cluster.lap_json(&["--json", "admin", "stats"]);
    support::wait_until_async("the warm pod ready", WAIT, || async {
        stats()["warm_pool"]["ready"] == 1
    })
    .await;
    cluster.api.set_pod_status(
        &warm,
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
    );
    let pods = cluster
        .pods_until("the evicted pod replaced", |pods| pods.len() == 1 && pods[0] != warm)
        .await;
    // The new one is what a session gets.
    support::wait_until_async("the new warm pod ready", WAIT, || async {
        stats()["warm_pool"]["ready"] == 1
    })
    .await;
    let session = cluster.lap_json(&["--json", "sessions", "create", "coder"]);
    assert_eq!(session["status"], "ready", "{session}");
    assert_eq!(pod_of(&session), pods[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_claude_answers_messages_in_an_isolated_pod_and_its_key_is_swapped_only_in_the_pods_vault() {
    // The real `claude` (npm), driven by the `claude-agent-sdk` harness through the pod's harness
    // (`exec_stream` over the port-forward), in a pod whose network and mounts are its own: its only
    // way out is its vault container, which sends api.anthropic.com to the fake Anthropic API.
    use support::anthropic::{self, HOST};
    if !support::require("claude", "npm install -g @anthropic-ai/claude-code") {
        return;
    }
    let (cluster, seen) = Cluster::start_isolated(&["--warm-pool-size", "0"], HOST, anthropic::handler()).await;
    real_claude_answers_through_its_vault(&cluster, &seen).await;
}

/// The real `claude` in a session of `cluster` (isolated pods, the fake Anthropic API behind the
/// vault): plain, streamed and tool-call answers to `lap send`; the agent holds a stub, and the real
/// key reached the vendor only, with every model call; the egress log records the swaps.
async fn real_claude_answers_through_its_vault(cluster: &Cluster, seen: &Arc<Mutex<Vec<support::vendor::Seen>>>) {
    use support::anthropic::{HOST, MODEL, REAL_KEY, RUN_PWD, echo};
    cluster
        .home
        .lap()
        .env("ANTHROPIC_API_KEY", REAL_KEY)
        .run([
            "agents",
            "create",
            "sdk",
            "--harness",
            "claude-agent-sdk",
            "--model",
            MODEL,
            "--credential",
            "ANTHROPIC_API_KEY",
            "--allow-out",
            HOST,
        ])
        .success();
    let context = || {
        let paths: Vec<(String, Option<String>)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.path.clone(), s.header("x-api-key").map(str::to_owned)))
            .collect();
        format!("the fake API saw {paths:?}\n{}", cluster.server.log())
    };
    let reply = cluster.home.lap().run(["send", "sdk", "hello there"]);
    assert_eq!(reply.code, 0, "{reply}\n{}", context());
    assert_eq!(reply.stdout.trim_end(), echo("hello there"), "{reply}");
    let sessions = cluster.lap_json(&["--json", "sessions", "list"]);
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    assert!(
        cluster.show(&id)["sandbox_url"]
            .as_str()
            .unwrap()
            .starts_with("kube://lap/")
    );
    let streamed = cluster.home.lap().run(["send", "--stream", &id, "streamed words"]);
    assert_eq!(streamed.code, 0, "{streamed}\n{}", context());
    assert_eq!(streamed.stdout, format!("{}\n", echo("streamed words")));
    // A tool call: claude runs `pwd` in the pod and the model gets its output.
    let message = cluster.lap_json(&["send", "--json", "sdk", &format!("{RUN_PWD} now")]);
    assert_eq!(message["info"]["harness"], "claude-agent-sdk");
    assert_eq!(message["parts"][0]["tool"], "Bash", "{message:#}");
    assert_eq!(message["parts"][0]["state"]["status"], "completed", "{message:#}");
    let cwd = message["parts"][0]["state"]["output"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(message["parts"][1]["text"], format!("ran: {cwd}"), "{message:#}");

    // The agent holds the stub; the real key went only to the vendor, put there by the pod's vault.
    let env = cluster
        .home
        .lap()
        .run(["exec", &id, "--", "printenv", "ANTHROPIC_API_KEY"]);
    assert_eq!(env.code, 0, "{env}");
    assert!(env.stdout.trim().starts_with("stub_"), "{env}");
    let models: Vec<Option<String>> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("/v1/messages"))
        .map(|s| s.header("x-api-key").map(str::to_owned))
        .collect();
    assert!(models.len() >= 4, "{}", context());
    assert!(
        models.iter().all(|key| key.as_deref() == Some(REAL_KEY)),
        "{}",
        context()
    );
    let records = cluster
        .egress_until(&id, |records| {
            records
                .iter()
                .any(|r| r["host"] == HOST && r["swapped"] == json!(["ANTHROPIC_API_KEY"]))
        })
        .await;
    assert!(records.iter().all(|r| r["host"] == HOST), "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_claude_in_a_gateway_mode_pod_gets_its_key_swapped_by_lap_serves_gateway() {
    // `--kube-vault gateway`: the pod holds only its harness (no vault container, no CA key), and
    // its only way out is its `HTTPS_PROXY`, which names lap serve's gateway with the pod's proxy
    // credential; the kubelet here carries it from the pod's IP, as the pod network would.
    use support::anthropic::{self, HOST};
    if !support::require("claude", "npm install -g @anthropic-ai/claude-code") {
        return;
    }
    let (cluster, seen) = Cluster::start_gateway(&["--warm-pool-size", "0"], Some((HOST, anthropic::handler()))).await;
    real_claude_answers_through_its_vault(&cluster, &seen).await;
    let id = cluster.lap_json(&["--json", "sessions", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pod = pod_of(&cluster.show(&id));
    let secret = cluster.api.get("secrets", &manifest::secret_name(&pod)).unwrap();
    assert!(secret["data"].get(manifest::keys::CA_KEY).is_none(), "{secret}");
    let proxy = cluster.home.lap().run(["exec", &id, "--", "printenv", "HTTPS_PROXY"]);
    assert_eq!(
        proxy.stdout.trim(),
        format!("http://lap:{pod}@127.0.0.1:{}", manifest::PROXY_PORT),
        "{proxy}"
    );
}

/// Whether running in gateway mode is possible here: isolated pods need root (`unshare`).
fn gateway_pods_possible() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    support::skip("gateway-mode pods are isolated with `unshare --net --mount`, which needs root");
    false
}

impl Cluster {
    /// `curl` in session `id`'s pod through its own `HTTPS_PROXY` (lap serve's gateway) to `host`,
    /// with its stub as a bearer token: the HTTP status.
    fn curl_in_pod(&self, id: &str, host: &str) -> String {
        let curl = format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $GITHUB_TOKEN\" https://{host}:{}/user",
            self.upstream_port,
        );
        let out = self.home.lap().run(["exec", id, "--", "sh", "-c", &curl]);
        assert_eq!(out.code, 0, "{out}\n{}", self.server.log());
        out.stdout
    }

    /// `curl` on the host, from source address `from`, through the gateway with proxy URL
    /// credential `credential` (`user:password`, or none) to api.github.test with `bearer`: the
    /// status of the proxy's answer to CONNECT (`%{http_connect}`) and curl's exit code.
    fn curl_via_gateway(&self, pod: &str, from: &str, credential: Option<&str>, bearer: &str) -> (String, i32) {
        let (gateway, bundle) = self.proxy_of(pod);
        let proxy = match credential {
            Some(credential) => format!("http://{credential}@{gateway}"),
            None => format!("http://{gateway}"),
        };
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_connect}", "--interface", from])
            .args(["--proxy", &proxy, "--cacert"])
            .arg(&bundle)
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .arg(format!("https://api.github.test:{}/user", self.upstream_port))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    /// The `Authorization` of every request the upstream saw, in order.
    fn authorizations(&self) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|s| s.header("authorization").map(str::to_owned))
            .collect()
    }

    /// The pod IP of `pod`, from its status.
    fn pod_ip(&self, pod: &str) -> String {
        let object = self.api.get("pods", pod).unwrap();
        object["status"]["podIP"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_mode_session_swaps_its_credential_in_lap_serve_and_its_pod_holds_only_the_harness() {
    if !gateway_pods_possible() {
        return;
    }
    let (cluster, _) = Cluster::start_gateway(&["--warm-pool-size", "0"], None).await;
    assert!(
        cluster.server.startup.contains("kube vault gateway on 127.0.0.1:"),
        "{}",
        cluster.server.startup
    );
    cluster.create_agent("gh");
    let (id, pod) = cluster.ready_session("gh").await;
    let object = cluster.api.get("pods", &pod).unwrap();
    let names: Vec<&Value> = object["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, ["harness"], "{object}");
    // The harness holds the stub; through its proxy the bound host gets the real value.
    assert_eq!(cluster.curl_in_pod(&id, "api.github.test"), "200");
    let auth = cluster.authorizations();
    assert_eq!(auth, [Some(format!("Bearer {REAL}"))]);
    // Toward a host it is not bound to, the stub is refused, not swapped, and nothing goes there.
    assert_eq!(cluster.curl_in_pod(&id, "api.other.test"), "403");
    assert_eq!(cluster.seen.lock().unwrap().len(), 1);
    let records = cluster.egress(&id, 2).await;
    assert_eq!(records[0]["swapped"], json!(["GITHUB_TOKEN"]), "{records:#?}");
    assert_eq!(records[1]["block_kind"], "credential-not-bound", "{records:#?}");
    // Every gateway pod trusts lap serve's CA, so it is served again.
    let ca = cluster.home.lap().run(["vault", "ca"]);
    assert_eq!(ca.code, 0, "{ca}");
    assert!(ca.stdout.contains("BEGIN CERTIFICATE"), "{ca}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_lap_serve_routes_a_gateway_pods_connections_to_its_session_again() {
    // The gateway's routes live in `lap serve`: after a restart (kill -9, as a crash or an evicted
    // pod would), recovery must route each adopted pod's IP to its session again, or its agent has
    // no way out; and the route it makes is still that pod's alone.
    if !gateway_pods_possible() {
        return;
    }
    let (mut cluster, _) = Cluster::start_gateway(&["--warm-pool-size", "0"], None).await;
    cluster.create_agent("gh");
    let (id, pod) = cluster.ready_session("gh").await;
    assert_eq!(cluster.curl_in_pod(&id, "api.github.test"), "200");
    cluster.server.restart();
    assert_eq!(cluster.show(&id)["status"], "ready", "{}", cluster.server.log());
    assert_eq!(
        cluster.curl_in_pod(&id, "api.github.test"),
        "200",
        "{}",
        cluster.server.log()
    );
    let auth = cluster.authorizations();
    assert_eq!(auth, [Some(format!("Bearer {REAL}")), Some(format!("Bearer {REAL}"))]);
    let records = cluster.egress(&id, 2).await;
    assert!(
        records.iter().all(|r| r["swapped"] == json!(["GITHUB_TOKEN"])),
        "{records:#?}"
    );
    // The re-made route is the pod's IP only: its credential from another address is refused.
    let (status, _) = cluster.curl_via_gateway(&pod, "127.0.0.1", Some(&format!("lap:{pod}")), "x");
    assert_eq!(status, "407");
    assert_eq!(cluster.seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_gateway_pod_made_before_its_session_is_claimed_and_its_sessions_credential_swapped() {
    // A warm pod's proxy credential is in its environment from the start (it names the pod); the
    // session that claims it has its binding routed to that pod's IP late, at the claim.
    if !gateway_pods_possible() {
        return;
    }
    let (cluster, _) = Cluster::start_gateway(&["--warm-pool-size", "1"], None).await;
    cluster.create_agent("gh");
    let warm = cluster.pods_until("a warm pod", |pods| pods.len() == 1).await[0].clone();
    support::wait_until_async("the warm pod to be ready", WAIT, || async {
        cluster.lap_json(&["--json", "admin", "stats"])["warm_pool"]["ready"] == 1
    })
    .await;
    let session = cluster.lap_json(&["--json", "sessions", "create", "gh"]);
    assert_eq!(session["status"], "ready", "{session}");
    assert_eq!(pod_of(&session), warm);
    let id = session["id"].as_str().unwrap();
    assert_eq!(cluster.curl_in_pod(id, "api.github.test"), "200");
    let auth = cluster.authorizations()[0].clone();
    assert_eq!(auth, Some(format!("Bearer {REAL}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_refuses_a_wrong_missing_or_other_sessions_credential_and_a_right_one_from_another_address() {
    if !gateway_pods_possible() {
        return;
    }
    let (cluster, _) = Cluster::start_gateway(&["--warm-pool-size", "0"], None).await;
    cluster.create_agent("gh");
    let (a, pod_a) = cluster.ready_session("gh").await;
    let (b, pod_b) = cluster.ready_session("gh").await;
    let (ip_a, ip_b) = (cluster.pod_ip(&pod_a), cluster.pod_ip(&pod_b));
    assert_ne!(ip_a, ip_b);
    let stub = cluster.home.lap().run(["exec", &a, "--", "printenv", "GITHUB_TOKEN"]);
    let stub = stub.stdout.trim().to_owned();
    assert!(stub.starts_with("stub_"), "{stub}");
    let own = format!("lap:{pod_a}");
    // From A's address with A's credential: served, the stub swapped (the test can pass).
    assert_eq!(
        cluster.curl_via_gateway(&pod_a, &ip_a, Some(&own), &stub),
        ("200".to_owned(), 0)
    );
    assert_eq!(cluster.seen.lock().unwrap().len(), 1);
    // Everything else is refused with 407 before any upstream is dialled.
    let elsewhere = format!("{}.250", ip_a.rsplit_once('.').unwrap().0);
    let other = format!("lap:{pod_b}");
    for (from, credential, what) in [
        (ip_a.as_str(), None, "no credential"),
        (
            ip_a.as_str(),
            Some("lap:lap-0000000000000000"),
            "a credential naming no sandbox",
        ),
        (ip_a.as_str(), Some(&*format!("root:{pod_a}")), "another user"),
        (ip_a.as_str(), Some(&*other), "another session's credential"),
        (
            elsewhere.as_str(),
            Some(&*own),
            "the right credential from another address",
        ),
        (
            ip_b.as_str(),
            Some(&*own),
            "the right credential from another pod's address",
        ),
        ("127.0.0.1", Some(&*own), "the right credential from the host"),
    ] {
        let (status, code) = cluster.curl_via_gateway(&pod_a, from, credential, &stub);
        assert_eq!(status, "407", "{what}: curl exit {code}\n{}", cluster.server.log());
        assert_ne!(code, 0, "{what}");
    }
    assert_eq!(
        cluster.seen.lock().unwrap().len(),
        1,
        "a refused connection reached the upstream"
    );
    // A known credential used from elsewhere is an alert in that session's egress log; every
    // refusal is in lap serve's log.
    let refused = |records: &[Value]| {
        records
            .iter()
            .filter(|r| r["block_kind"] == "proxy-credential" && r["alert"] == true && r["status"] == 407)
            .count()
    };
    cluster.egress_until(&a, |records| refused(records) == 3).await;
    cluster.egress_until(&b, |records| refused(records) == 1).await;
    let log = cluster.server.log();
    assert_eq!(
        log.matches("the vault gateway refused a connection").count(),
        7,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_reaching_pods_by_ip_runs_sessions_without_any_port_forward() {
    let cluster = Cluster::start_with(&["--warm-pool-size", "0", "--kube-reach", "pod-ip"], true).await;
    assert!(
        cluster
            .server
            .startup
            .contains("kube backend: namespace `lap`, image `lap-sandbox:dev`, pods reached on their pod IPs"),
        "{}",
        cluster.server.startup
    );
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    let ip = cluster.api.get("pods", &pod).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ip.starts_with("127.") && !ip.starts_with("127.0."), "{ip}");
    let out = cluster.home.lap().run(["exec", &id, "--", "printenv", "GITHUB_TOKEN"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.starts_with("stub_"), "{out}");
    // Late binding reached the sidecar's admin endpoint on the pod IP: the stub is swapped.
    assert_eq!(cluster.curl(&id, &pod, "api.github.test"), "200");
    let auth = cluster.authorizations()[0].clone();
    assert_eq!(auth.as_deref(), Some(format!("Bearer {REAL}").as_str()));
    assert_eq!(cluster.egress(&id, 1).await.len(), 1);
    // `lap <agent>` attaches (piped) on the pod IP too, and the agent's exit is lap's.
    let out = cluster.home.lap().stdin("echo by-$((40 + 2))\nexit 4\n").run(["coder"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stdout.contains("by-42"), "{out}");
    let seen = cluster.api.seen();
    assert!(
        !seen.iter().any(|line| line.ends_with("/portforward")),
        "a port-forward was opened: {seen:?}"
    );
}

/// A real `lap harness --listen` on the host's loopback, with its home in `home`.
fn pod_harness(home: &Path) -> (Child, SocketAddr) {
    let mut harness = Command::new(LAP);
    harness
        .args(["harness", "--listen", "127.0.0.1:0", "--home"])
        .arg(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let (child, line) = spawn_first_line(harness);
    (child, addr_after(&line, "listening on "))
}

async fn exec(addr: SocketAddr, argv: &[&str]) -> (Result<i32, String>, String) {
    use lap::sandbox::ExecChunk;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = lap::wire::harness::ExecRequest {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        cwd: None,
        env: Vec::new(),
    };
    let (_stdin, stdin) = tokio::sync::mpsc::channel(1);
    let (output, mut chunks) = tokio::sync::mpsc::channel(16);
    let collect = async move {
        let mut text = String::new();
        while let Some(ExecChunk::Stdout(data) | ExecChunk::Stderr(data)) = chunks.recv().await {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        text
    };
    let (code, text) = tokio::join!(
        async move {
            let code = lap::sandbox::kube::harness::exec(stream, request, stdin, output).await;
            code.map_err(|e| e.to_string())
        },
        collect
    );
    (code, text)
}

#[tokio::test]
async fn the_pod_harness_serves_the_protocol_on_tcp_in_its_home_and_holds_no_proxy_port() {
    use lap::wire::harness::{self as proto, Request, StartRequest};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (child, addr) = pod_harness(&home);
    let mut harness = Containers::default();
    harness.children.push(child);
    assert!(home.is_dir(), "the home is made at start");

    // Before `start` the session has no environment; after it, commands get it, in the home.
    let (code, text) = exec(addr, &["sh", "-c", "echo \"[$TOKEN]\" \"$HOME\" \"$(pwd)\""]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(text, format!("[] {0} {0}\n", home.display()));
    let start = StartRequest {
        env: vec![("TOKEN".into(), "stub_token_1".into())],
        ..Default::default()
    };
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    lap::sandbox::kube::harness::start_agent(stream, start).await.unwrap();
    let (code, text) = exec(addr, &["sh", "-c", "echo \"[$TOKEN]\"; exit 4"]).await;
    assert_eq!((code, text.as_str()), (Ok(4), "[stub_token_1]\n"));

    // The pod's vault sidecar owns the proxy port: asking the harness for it is a readable refusal.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    proto::write_request(&mut stream, &Request::ProxyListener)
        .await
        .unwrap();
    let (kind, message) = proto::read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(kind, proto::ERROR);
    assert_eq!(
        String::from_utf8_lossy(&message),
        "this harness holds no proxy port: the sandbox's vault runs beside it"
    );
    // No agent was started, and `wait` says so.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = lap::sandbox::kube::harness::wait_agent(stream).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: this sandbox runs no agent"
    );
}

#[tokio::test]
async fn a_pod_harness_with_a_token_refuses_connections_without_it() {
    use lap::wire::harness::{self as proto, Request};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("harness-token");
    std::fs::write(&token_file, "the-right-token\n").unwrap();
    let mut command = Command::new(LAP);
    command
        .args(["harness", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .arg("--home")
        .arg(dir.path().join("home"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let (child, line) = spawn_first_line(command);
    let mut harness = Containers::default();
    harness.children.push(child);
    let addr = addr_after(&line, "listening on ");

    let refusal = "this harness needs its token: the one sent is wrong or missing";
    // No token: the request line itself is not the token.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    proto::write_request(&mut stream, &Request::Wait).await.unwrap();
    let (kind, message) = proto::read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        (kind, String::from_utf8_lossy(&message).as_ref()),
        (proto::ERROR, refusal)
    );
    assert_eq!(
        proto::read_frame(&mut stream).await.unwrap(),
        None,
        "closed after the refusal"
    );
    // A wrong token.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    proto::write_auth(&mut stream, "the-wrong-token").await.unwrap();
    proto::write_request(&mut stream, &Request::Wait).await.unwrap();
    let (kind, message) = proto::read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        (kind, String::from_utf8_lossy(&message).as_ref()),
        (proto::ERROR, refusal)
    );
    // The right one (the file's, trimmed): the request is served.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    proto::write_auth(&mut stream, "the-right-token").await.unwrap();
    let err = lap::sandbox::kube::harness::wait_agent(stream).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: this sandbox runs no agent"
    );
    // An empty token file is refused at start.
    std::fs::write(&token_file, "\n").unwrap();
    let out = Command::new(LAP)
        .args(["harness", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- Issue 17 part 1 (ports): a pod's port, reached through its harness connection ----

/// Kills a process a test started inside a pod (the fake kubelet's pods share the host's loopback).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

/// `GET path` on `addr` (`Connection: close`), with the master key when given: the whole answer.
fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pods_port_is_reached_through_its_harness_connection_by_port_forward_and_the_proxy_path() {
    use std::io::BufRead;
    let cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.create_agent("web");
    let (id, _pod) = cluster.ready_session("web").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = format!(
        "mkdir -p www && echo pod-page-{id} > www/index.html && nohup python3 -m http.server {port} \
         --bind 127.0.0.1 --directory www >/dev/null 2>&1 </dev/null & echo $!"
    );
    let out = cluster.home.lap().run(["exec", &id, "--", "sh", "-c", &start]);
    assert_eq!(out.code, 0, "{out}");
    let _server = KillOnDrop(out.stdout.trim().parse().expect("the server's pid"));

    // Listed by the pod's harness; the pod's own ports (its harness's, the sidecar's) are not.
    support::wait_until_async(&format!("port {port} listed"), WAIT, || async {
        let listed = cluster.lap_json(&["--json", "sessions", "ports", &id]);
        let ports: Vec<u64> = listed["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert!(!ports.contains(&u64::from(manifest::HARNESS_PORT)), "{ports:?}");
        if ports.contains(&u64::from(port)) {
            Ok(())
        } else {
            Err(format!("{ports:?}"))
        }
    })
    .await;
    let page = format!("pod-page-{id}");

    // The proxy path, through the harness connection (the API server's port-forward to the pod's
    // harness port): no Service, no port of the pod's own forwarded.
    let api: SocketAddr = ([127, 0, 0, 1], cluster.server.port).into();
    let key = cluster.server.master_key();
    let proxied = http_get(
        api,
        &format!("/api/v1/managed_agents/sessions/{id}/ports/{port}/"),
        Some(&key),
    );
    assert!(
        proxied.starts_with("HTTP/1.1 200") && proxied.contains(&page),
        "{proxied}"
    );

    // `lap port-forward`.
    let mut forward = Command::new(LAP);
    forward
        .args(["port-forward", &id, &format!("0:{port}")])
        .env_clear()
        .envs(cluster.home.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = forward.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _forward = KillOnDrop(child.id() as i32);
    let local: SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let fetched = http_get(local, "/index.html", None);
    assert!(fetched.contains(&page), "{fetched}");
    // Through the API server's port-forward to the pod — whose fake forwards only the pod's
    // harness and admin ports, so the page came through the harness connection.
    let seen = cluster.api.seen();
    assert!(seen.iter().any(|l| l.ends_with("/portforward")), "{seen:?}");
    let _ = child.kill();
    let _ = child.wait();
}

impl Cluster {
    /// `lap exec ID -- sh -c SCRIPT` in the session's home: its stdout, after a zero exit.
    fn sh(&self, id: &str, script: &str) -> String {
        let out = self.home.lap().run(["exec", id, "--", "sh", "-c", script]);
        assert_eq!(out.code, 0, "{out}\n{}", self.server.log());
        out.stdout
    }

    /// Session `id`'s workspace claims, by name.
    fn claims_of(&self, id: &str) -> Vec<String> {
        self.api
            .names("persistentvolumeclaims")
            .into_iter()
            .filter(|name| {
                self.api.get("persistentvolumeclaims", name).unwrap()["metadata"]["labels"][manifest::SESSION] == id
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kube_sessions_claim_keeps_its_files_over_hibernation_and_forks_and_snapshots_copy_them() {
    let cluster = Cluster::start(&["--warm-pool-size", "0", "--kube-workspace-size", "3Gi"]).await;
    assert!(
        cluster.server.startup.contains("workspaces on claims of 3Gi"),
        "{}",
        cluster.server.startup
    );
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    let claim = format!("lap-work-{id}");
    assert_eq!(cluster.claims_of(&id), std::slice::from_ref(&claim));
    // `lap sessions show` says where the workspace lives and its size (the claim's capacity).
    let shown = cluster.show(&id);
    assert_eq!(
        shown["workspace"]["path"],
        format!("kube://lap/persistentvolumeclaims/{claim}"),
        "{shown}"
    );
    assert_eq!(shown["workspace"]["size_bytes"], 3u64 << 30);
    assert_eq!(shown["workspace"]["exists"], true);
    cluster.sh(&id, "echo before > note");

    // Hibernate: the pod goes, the claim stays; resume: a new pod on it, the file there.
    cluster.home.lap().run(["sessions", "hibernate", &id]).success();
    assert_eq!(cluster.show(&id)["status"], "hibernated");
    cluster.pods_until("the pod gone", |pods| !pods.contains(&pod)).await;
    assert_eq!(cluster.claims_of(&id), std::slice::from_ref(&claim));
    cluster.home.lap().run(["sessions", "resume", &id]).success();
    let shown = cluster.show(&id);
    assert_eq!(shown["status"], "ready", "{shown}");
    let resumed = pod_of(&shown);
    assert_ne!(resumed, pod);
    assert_eq!(cluster.sh(&id, "cat note"), "before\n");
    assert_eq!(cluster.claims_of(&id), std::slice::from_ref(&claim));

    // Pause cannot freeze a pod: a clear refusal that points at hibernate; nothing changes.
    let paused = cluster.home.lap().run(["sessions", "pause", &id]);
    assert_ne!(paused.code, 0, "{paused}");
    assert!(
        paused.stderr.contains("cannot pause") && paused.stderr.contains("hibernate"),
        "{paused}"
    );
    assert_eq!(cluster.show(&id)["status"], "ready");

    // A snapshot is a VolumeSnapshot of the claim; later writes do not reach it.
    let snapshot = cluster.lap_json(&["--json", "snapshots", "create", &id, "--name", "before"]);
    let taken = cluster.api.names("volumesnapshots");
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(snapshot["path"], format!("kube://lap/volumesnapshots/{}", taken[0]));
    assert_eq!(snapshot["size_bytes"], 3u64 << 30);
    cluster.sh(&id, "echo after > note");

    // A fork clones the claim: it sees the parent's files, and its writes stay its own.
    let fork = cluster.lap_json(&["--json", "sessions", "fork", &id]);
    let fork_id = fork["id"].as_str().unwrap().to_owned();
    let fork_shown = cluster
        .session_until(&fork_id, "settled", |s| s["status"] != "creating")
        .await;
    assert_eq!(fork_shown["status"], "ready", "{fork_shown}\n{}", cluster.server.log());
    let fork_claim = cluster
        .api
        .get("persistentvolumeclaims", &format!("lap-work-{fork_id}"))
        .unwrap();
    assert_eq!(fork_claim["spec"]["dataSource"]["name"], claim.as_str());
    assert_eq!(cluster.sh(&fork_id, "cat note"), "after\n");
    cluster.sh(&fork_id, "echo fork > note; echo mine > fork-only");
    assert_eq!(
        cluster.sh(&id, "cat note; test -e fork-only || echo absent"),
        "after\nabsent\n"
    );

    // A session from the snapshot has the file as it was when the snapshot was taken.
    let restored = cluster.lap_json(&["--json", "sessions", "create", "coder", "--from", "before"]);
    let restored_id = restored["id"].as_str().unwrap().to_owned();
    let shown = cluster
        .session_until(&restored_id, "settled", |s| s["status"] != "creating")
        .await;
    assert_eq!(shown["status"], "ready", "{shown}\n{}", cluster.server.log());
    assert_eq!(cluster.sh(&restored_id, "cat note"), "before\n");

    // A snapshot name that exists is refused; the snapshot is deleted with `snapshots delete`.
    let again = cluster.home.lap().run(["snapshots", "create", &id, "--name", "before"]);
    assert_ne!(again.code, 0, "{again}");
    assert_eq!(cluster.api.names("volumesnapshots").len(), 1);
    cluster.home.lap().run(["snapshots", "delete", "before"]).success();
    assert!(cluster.api.names("volumesnapshots").is_empty());

    // Deleting the session deletes its claim; the fork's and the restored one's stay theirs.
    cluster.home.lap().run(["sessions", "delete", &id]).success();
    assert!(cluster.claims_of(&id).is_empty());
    assert_eq!(cluster.claims_of(&fork_id).len(), 1);
    assert_eq!(cluster.claims_of(&restored_id).len(), 1);
    // A deleted session has no workspace to fork.
    let gone = cluster.home.lap().run(["sessions", "fork", &id]);
    assert_ne!(gone.code, 0, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_without_the_snapshot_api_a_snapshot_is_refused_with_a_hint_and_a_fork_still_works() {
    let cluster = Cluster::start(&["--warm-pool-size", "0"]).await;
    cluster.api.without_snapshot_api();
    cluster.create_agent("coder");
    let (id, _pod) = cluster.ready_session("coder").await;
    cluster.sh(&id, "echo kept > note");
    let refused = cluster.home.lap().run(["snapshots", "create", &id, "--name", "nope"]);
    assert_ne!(refused.code, 0, "{refused}");
    assert!(refused.stderr.contains("serves no CSI snapshot API"), "{refused}");
    assert!(
        refused.stderr.contains("hint:") && refused.stderr.contains("external-snapshotter"),
        "{refused}"
    );
    let listed = cluster.lap_json(&["--json", "snapshots", "list"]);
    assert_eq!(listed, json!([]));
    let fork = cluster.lap_json(&["--json", "sessions", "fork", &id]);
    let fork_id = fork["id"].as_str().unwrap().to_owned();
    let shown = cluster
        .session_until(&fork_id, "settled", |s| s["status"] != "creating")
        .await;
    assert_eq!(shown["status"], "ready", "{shown}");
    assert_eq!(cluster.sh(&fork_id, "cat note"), "kept\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_kube_workspace_size_none_pods_keep_an_empty_dir_and_hibernate_is_refused() {
    let cluster = Cluster::start(&["--warm-pool-size", "0", "--kube-workspace-size", "none"]).await;
    cluster.create_agent("coder");
    let (id, _pod) = cluster.ready_session("coder").await;
    assert!(cluster.api.names("persistentvolumeclaims").is_empty());
    let refused = cluster.home.lap().run(["sessions", "hibernate", &id]);
    assert_ne!(refused.code, 0, "{refused}");
    assert!(refused.stderr.contains("keeps no workspaces"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reaper_hibernates_an_idle_kube_session_keeping_its_claim_and_skips_the_pause_it_cannot_do() {
    let cluster = Cluster::start(&[
        "--warm-pool-size",
        "0",
        "--pause-after",
        "1s",
        "--hibernate-after",
        "3s",
    ])
    .await;
    cluster.create_agent("coder");
    let (id, pod) = cluster.ready_session("coder").await;
    cluster.sh(&id, "echo idle > note");
    // Past `--pause-after` nothing can be frozen on Kubernetes: the session stays ready, quietly.
    let shown = cluster
        .session_until(&id, "hibernated", |s| s["status"] != "ready")
        .await;
    assert_eq!(shown["status"], "hibernated", "{shown}\n{}", cluster.server.log());
    assert!(
        !cluster.server.log().contains("cannot pause an idle session"),
        "{}",
        cluster.server.log()
    );
    cluster.pods_until("the pod gone", |pods| !pods.contains(&pod)).await;
    assert_eq!(cluster.claims_of(&id).len(), 1);
    // An exec wakes it on a new pod over the same claim.
    assert_eq!(cluster.sh(&id, "cat note"), "idle\n");
    assert_eq!(cluster.show(&id)["status"], "ready");
}
