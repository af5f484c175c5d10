//! The Kubernetes backend's stateful flows against the in-process fake API server (`kube_fake`),
//! over real HTTP and WebSocket: a sandbox's life from create to delete, garbage collection through
//! owner references, the warm pool's claim race, adoption by a restarted server, late binding into a
//! real `lap vault sidecar` through port-forward, the pod watcher's failure reasons, and workspaces:
//! a session's PersistentVolumeClaim that outlives its pods, a warm pod's claim adopted or collected,
//! CSI VolumeSnapshots where the cluster serves them (and a clear refusal where it does not), forks
//! by claim cloning and sessions restored from a snapshot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lap::sandbox::kube::status::PodState;
use lap::sandbox::kube::{BoundCredential, Kube, KubeConfig, VaultBinding, manifest};
use lap::sandbox::{Sandbox, SandboxError, SandboxSpec, WorkspaceSource};
use serde_json::json;

use crate::kube_fake::FakeApi;
use crate::support;

/// The system roots the backend is given: each pod's bundle is these, then its own CA.
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nROOTS\n-----END CERTIFICATE-----\n";

fn config() -> KubeConfig {
    KubeConfig {
        namespace: "lap".into(),
        image: "lap-sandbox:dev".into(),
        defaults: manifest::Resources::harness_default(),
        system_roots_pem: ROOTS.into(),
        ready_timeout: Duration::from_secs(10),
        reach: lap::sandbox::kube::Reach::PortForward,
        workspace: None,
        vault: lap::sandbox::kube::KubeVault::Sidecar,
    }
}

fn spec(session: Option<&str>) -> SandboxSpec {
    SandboxSpec {
        harness_id: "shell".into(),
        session_id: session.map(str::to_owned),
        env: vec![("GITHUB_TOKEN".into(), "stub_github_token_3fa91c0d".into())],
        ..SandboxSpec::default()
    }
}

async fn backend() -> (FakeApi, String, Kube) {
    let (api, url) = FakeApi::start().await;
    let kube = Kube::new(FakeApi::client(&url), config());
    (api, url, kube)
}

/// A backend keeping workspaces: claims of `2Gi` of class `fast`, snapshots of class `csi-snap`.
fn workspace_config() -> KubeConfig {
    KubeConfig {
        workspace: Some(manifest::WorkspaceStorage {
            class: Some("fast".into()),
            size: "2Gi".into(),
            snapshot_class: Some("csi-snap".into()),
        }),
        ..config()
    }
}

async fn workspace_backend() -> (FakeApi, String, Kube) {
    let (api, url) = FakeApi::start().await;
    let kube = Kube::new(FakeApi::client(&url), workspace_config());
    (api, url, kube)
}

/// The claim pod `pod` mounts at `/work`.
fn work_claim(api: &FakeApi, pod: &str) -> String {
    let pod = api.get("pods", pod).unwrap();
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "work")
        .unwrap()
        .clone();
    volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap_or_else(|| panic!("`/work` is not a claim: {volume}"))
        .to_owned()
}

const S1: &str = "0b5a1c2e-1111-4111-8111-000000000001";
const S2: &str = "0b5a1c2e-2222-4222-8222-000000000002";
const S3: &str = "0b5a1c2e-3333-4333-8333-000000000003";
const SNAP: &str = "7c0ffee0-aaaa-4aaa-8aaa-00000000000a";

#[tokio::test]
async fn a_sandbox_lives_from_create_to_delete_with_all_its_objects() {
    let (api, _url, kube) = backend().await;
    let info = kube.create(&spec(Some("s-1"))).await.unwrap();
    assert_eq!(api.names("pods"), std::slice::from_ref(&info.id));
    assert_eq!(api.names("secrets"), [format!("{}-vault", info.id)]);
    assert_eq!(api.names("networkpolicies"), [format!("{}-egress", info.id)]);
    let secret = api.get("secrets", &format!("{}-vault", info.id)).unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        format!("uid-pods-{}", info.id)
    );
    assert_eq!(kube.list().await.unwrap(), std::slice::from_ref(&info));
    kube.delete(&info.id).await.unwrap();
    assert!(api.names("pods").is_empty() && api.names("secrets").is_empty() && api.names("networkpolicies").is_empty());
    // Deleting again is not an error.
    kube.delete(&info.id).await.unwrap();
    assert!(kube.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn deleting_only_the_pod_collects_its_secret_and_policy() {
    let (api, url, kube) = backend().await;
    let info = kube.create(&spec(Some("s-1"))).await.unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(FakeApi::client(&url), "lap");
    pods.delete(&info.id, &Default::default()).await.unwrap();
    assert!(
        api.names("secrets").is_empty(),
        "the owner reference did not collect the Secret"
    );
    assert!(api.names("networkpolicies").is_empty());
}

#[tokio::test]
async fn two_servers_claiming_one_warm_pod_at_once_never_both_get_it() {
    let (api, url, kube) = backend().await;
    let warm = kube.create(&spec(None)).await.unwrap();
    let other = Kube::new(FakeApi::client(&url), config());
    let (first, second) = tokio::join!(kube.claim(&warm.id, "s-1"), other.claim(&warm.id, "s-2"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first ^ second, "exactly one claim wins: {first} {second}");
    let labels = &api.get("pods", &warm.id).unwrap()["metadata"]["labels"];
    assert_eq!(labels[manifest::WARM], "false");
    assert_eq!(labels[manifest::SESSION], if first { "s-1" } else { "s-2" });
    // Taken: nobody claims it again.
    assert!(!kube.claim(&warm.id, "s-3").await.unwrap());
    let listed = kube.list().await.unwrap();
    assert_eq!(listed[0].session_id.as_deref(), Some(if first { "s-1" } else { "s-2" }));
}

#[tokio::test]
async fn a_warm_pod_that_changed_since_it_was_read_is_not_claimed_by_a_stale_patch() {
    let (api, url, kube) = backend().await;
    let warm = kube.create(&spec(None)).await.unwrap();
    let read = api.get("pods", &warm.id).unwrap()["metadata"]["resourceVersion"].clone();
    api.touch("pods", &warm.id);
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(FakeApi::client(&url), "lap");
    let patch = lap::sandbox::kube::claim_patch(read.as_str().unwrap(), "s-1");
    let err = pods
        .patch(&warm.id, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");
    // A claim reads it afresh and wins; a warm pod that failed is not claimed.
    assert!(kube.claim(&warm.id, "s-1").await.unwrap());
    let failing = kube.create(&spec(None)).await.unwrap();
    api.set_pod_status(
        &failing.id,
        json!({"phase": "Running", "containerStatuses": [{"name": "harness",
        "ready": false, "restartCount": 0, "image": "i", "imageID": "",
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    );
    assert!(!kube.claim(&failing.id, "s-2").await.unwrap());
    assert_eq!(
        api.get("pods", &failing.id).unwrap()["metadata"]["labels"][manifest::WARM],
        "true"
    );
}

#[tokio::test]
async fn a_restarted_server_adopts_every_sandbox_and_forgets_deleted_ones() {
    let (_api, url, kube) = backend().await;
    let session = kube.create(&spec(Some("s-1"))).await.unwrap();
    let warm = kube.create(&spec(None)).await.unwrap();
    let gone = kube.create(&spec(Some("s-2"))).await.unwrap();
    kube.delete(&gone.id).await.unwrap();
    drop(kube);
    let restarted = Kube::new(FakeApi::client(&url), config());
    let mut adopted = restarted.list().await.unwrap();
    adopted.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    assert_eq!(adopted, [warm, session]);
}

#[tokio::test]
async fn a_pod_that_cannot_pull_its_image_fails_create_and_is_cleaned_up() {
    let (api, _url, kube) = backend().await;
    // The kubelet cannot pull the image.
    api.new_pods_get(json!({"phase": "Pending", "containerStatuses": [{"name": "harness",
        "ready": false, "restartCount": 0, "image": "lap-sandbox:dev", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}));
    let err = kube.create(&spec(Some("s-1"))).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the sandbox backend failed: cannot pull the image of container `harness` (ImagePullBackOff): Back-off pulling image; {}",
            lap::sandbox::kube::status::PULL_ADVICE
        )
    );
    assert!(api.names("pods").is_empty() && api.names("secrets").is_empty());
}

/// More pods than one page of the watcher's list (kube-runtime asks for 500 at a time, and an API
/// server answers in pages): every pod is seen once, then a change after the list still comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_every_pod_when_the_list_comes_in_pages() {
    let (api, _url, kube) = backend().await;
    let made: Vec<String> = futures_util::stream::iter(0..501)
        .map(|_| async { kube.create(&spec(None)).await.unwrap().id })
        .buffer_unordered(8)
        .collect()
        .await;
    let mark = api.seen().len();
    let mut states = Box::pin(kube.pod_states());
    let mut seen = Vec::new();
    for _ in 0..made.len() {
        let (id, state) = states.next().await.unwrap().unwrap();
        assert_eq!(state, PodState::Ready, "{id}");
        seen.push(id);
    }
    seen.sort();
    let mut expected = made.clone();
    expected.sort();
    assert_eq!(seen, expected, "each pod once");
    api.set_pod_status(
        &made[0],
        json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}),
    );
    let (id, state) = states.next().await.unwrap().unwrap();
    assert_eq!(id, made[0]);
    assert!(matches!(state, PodState::Failed { .. }), "{state:?}");
    // Two pages of the list, then the watch.
    let reads: Vec<String> = api.seen()[mark..]
        .iter()
        .filter(|line| *line == "GET /api/v1/namespaces/lap/pods")
        .cloned()
        .collect();
    assert!(reads.len() >= 3, "the list came in one page: {reads:?}");
}

#[tokio::test]
async fn the_watcher_reports_oom_kills_evictions_and_deletions_by_sandbox_id() {
    let (api, _url, kube) = backend().await;
    let a = kube.create(&spec(Some("s-1"))).await.unwrap();
    let b = kube.create(&spec(Some("s-2"))).await.unwrap();
    let mut states = Box::pin(kube.pod_states());
    // The initial list: both ready.
    let mut initial = vec![
        states.next().await.unwrap().unwrap(),
        states.next().await.unwrap().unwrap(),
    ];
    initial.sort_by(|x, y| x.0.cmp(&y.0));
    let mut expected = vec![(a.id.clone(), PodState::Ready), (b.id.clone(), PodState::Ready)];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(initial, expected);
    api.set_pod_status(&a.id, json!({"phase": "Running", "containerStatuses": [{"name": "harness", "ready": false,
        "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
    assert_eq!(
        states.next().await.unwrap().unwrap(),
        (
            a.id.clone(),
            PodState::Failed {
                reason: "container `harness` ran out of memory (OOMKilled); raise the agent's memory limit".into()
            }
        )
    );
    api.set_pod_status(
        &b.id,
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage."}),
    );
    assert_eq!(
        states.next().await.unwrap().unwrap(),
        (
            b.id.clone(),
            PodState::Failed {
                reason: "the sandbox pod was evicted: The node was low on resource: ephemeral-storage.".into()
            }
        )
    );
    kube.delete(&a.id).await.unwrap();
    assert_eq!(states.next().await.unwrap().unwrap(), (a.id.clone(), PodState::Gone));
}

/// The key `key` of sandbox `id`'s Secret, decoded.
fn secret_file(api: &FakeApi, id: &str, key: &str) -> Vec<u8> {
    use base64::Engine;
    let secret = api.get("secrets", &manifest::secret_name(id)).unwrap();
    let data = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the secret of `{id}` has no `{key}`"));
    base64::engine::general_purpose::STANDARD.decode(data).unwrap()
}

/// Whether the leaf that sandbox `signer`'s vault mints for `host` (its CA loaded from its Secret, as
/// its sidecar loads it) verifies against the CA bundle sandbox `truster`'s harness is given.
fn leaf_verifies(api: &FakeApi, signer: &str, truster: &str, host: &str) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    for key in [manifest::keys::CA_CERT, manifest::keys::CA_KEY] {
        std::fs::write(dir.path().join(key), secret_file(api, signer, key)).unwrap();
    }
    let ca = lap::vault::ca::CertificateAuthority::load(dir.path()).unwrap();
    let leaf = ca.leaf(host).unwrap();
    let bundle = secret_file(api, truster, manifest::keys::CA_BUNDLE);
    let mut roots = rustls::RootCertStore::empty();
    // The placeholder system roots are not certificates; the pod's CA is.
    let (added, _) = roots
        .add_parsable_certificates(rustls_pki_types::CertificateDer::pem_slice_iter(&bundle).filter_map(Result::ok));
    assert_eq!(added, 1, "the bundle of `{truster}` holds its own CA");
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &leaf.cert[0],
            &leaf.cert[1..],
            &rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap(),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .is_ok()
}

#[tokio::test]
async fn each_pod_gets_a_vault_ca_of_its_own_whose_leaves_no_other_pod_trusts() {
    let (api, _url, kube) = backend().await;
    // A warm pod (claimed later, it keeps its CA) and a session's pod.
    let warm = kube.create(&spec(None)).await.unwrap().id;
    let session = kube.create(&spec(Some("s-1"))).await.unwrap().id;
    let key = |id: &str| secret_file(&api, id, manifest::keys::CA_KEY);
    let cert = |id: &str| String::from_utf8(secret_file(&api, id, manifest::keys::CA_CERT)).unwrap();
    assert!(key(&warm).starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_ne!(key(&warm), key(&session), "two pods hold the same CA key");
    assert_ne!(cert(&warm), cert(&session));
    // Each harness trusts the system roots and its own pod's CA, nothing else lap made.
    for (id, other) in [(&warm, &session), (&session, &warm)] {
        let bundle = String::from_utf8(secret_file(&api, id, manifest::keys::CA_BUNDLE)).unwrap();
        assert_eq!(bundle, format!("{ROOTS}{}", cert(id)));
        assert!(!bundle.contains(&cert(other)));
    }
    // A leaf of one pod's vault verifies in that pod only.
    assert!(leaf_verifies(&api, &warm, &warm, "api.github.com"));
    assert!(leaf_verifies(&api, &session, &session, "api.github.com"));
    assert!(!leaf_verifies(&api, &warm, &session, "api.github.com"));
    assert!(!leaf_verifies(&api, &session, &warm, "api.github.com"));
    // Claiming the warm pod keeps its CA: the claim is a label patch, the Secret is not touched.
    let before = key(&warm);
    assert!(kube.claim(&warm, "s-2").await.unwrap());
    assert_eq!(key(&warm), before);
}

#[tokio::test]
async fn late_binding_reaches_the_real_sidecar_through_port_forward_with_the_secret_token() {
    use base64::Engine;
    let (api, _url, kube) = backend().await;
    let warm = kube.create(&spec(None)).await.unwrap();
    let secret = api.get("secrets", &format!("{}-vault", warm.id)).unwrap();
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][manifest::keys::ADMIN_TOKEN].as_str().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = support::sidecar(dir.path(), std::str::from_utf8(&token).unwrap());
    api.forward(manifest::ADMIN_PORT, sidecar.admin);
    let binding = VaultBinding {
        credentials: vec![BoundCredential {
            name: "GITHUB_TOKEN".into(),
            stub: "stub_github_token_3fa91c0d".into(),
            value: lap::secret::Secret::new("ghp_real_value"),
            hosts: vec!["api.github.com".into()],
            inject: lap::wire::vault::default_injection("GITHUB_TOKEN"),
            rules: Vec::new(),
        }],
        allow_out: vec!["api.github.com".into()],
        ..VaultBinding::default()
    };
    kube.bind(&warm.id, &binding).await.unwrap();
    // The Secret holds the binding too, for a sidecar that restarts.
    let secret = api.get("secrets", &format!("{}-vault", warm.id)).unwrap();
    let written = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][manifest::keys::BINDING].as_str().unwrap())
        .unwrap();
    let written: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(written["credentials"][0]["value"], "ghp_real_value");
    assert!(
        api.seen()
            .contains(&format!("GET /api/v1/namespaces/lap/pods/{}/portforward", warm.id)),
        "{:?}",
        api.seen()
    );
}

#[tokio::test]
async fn late_binding_with_a_token_the_sidecar_does_not_know_is_refused() {
    let (api, _url, kube) = backend().await;
    let warm = kube.create(&spec(None)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = support::sidecar(dir.path(), "a-different-token");
    api.forward(manifest::ADMIN_PORT, sidecar.admin);
    let err = kube.bind(&warm.id, &VaultBinding::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the sandbox backend failed: the vault of sandbox `{}` refused the binding (HTTP 401)",
            warm.id
        )
    );
}

/// A stand-in for the pod's `lap harness --listen`, speaking the harness protocol: it keeps the
/// token each connection sends first, then `start` answers `{}` (or an error for the command
/// `fail`), `wait` says 7, `exec` echoes its argv and stdin on stdout, writes `warn` on stderr and
/// exits 3, `attach` repaints, then echoes keystrokes and resizes.
async fn fake_harness() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use lap::wire::harness::{self as proto, Request};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = tokio::io::BufReader::new(rd);
                let auth: proto::Auth = proto::read_line_json(&mut rd).await.unwrap();
                seen.lock().unwrap().push(auth.auth);
                let request: Request = proto::read_line_json(&mut rd).await.unwrap();
                match request {
                    Request::Start(start) => {
                        let line = if start.command.as_deref() == Some("fail") {
                            "{\"error\":\"no such program\"}\n"
                        } else {
                            "{}\n"
                        };
                        tokio::io::AsyncWriteExt::write_all(&mut wr, line.as_bytes())
                            .await
                            .unwrap();
                    }
                    Request::Wait => proto::write_frame(&mut wr, proto::EXIT, &7i32.to_be_bytes())
                        .await
                        .unwrap(),
                    Request::Exec(exec) => {
                        let mut stdin = Vec::new();
                        while let Some((proto::STDIN, data)) = proto::read_frame(&mut rd).await.unwrap() {
                            if data.is_empty() {
                                break;
                            }
                            stdin.extend(data);
                        }
                        let said = format!("{:?} stdin={}", exec.argv, String::from_utf8_lossy(&stdin));
                        proto::write_frame(&mut wr, proto::STDOUT, said.as_bytes())
                            .await
                            .unwrap();
                        proto::write_frame(&mut wr, proto::STDERR, b"warn").await.unwrap();
                        proto::write_frame(&mut wr, proto::EXIT, &3i32.to_be_bytes())
                            .await
                            .unwrap();
                    }
                    Request::Attach(size) => {
                        let screen = format!("screen {}x{}", size.cols, size.rows);
                        proto::write_frame(&mut wr, proto::REPAINT, screen.as_bytes())
                            .await
                            .unwrap();
                        while let Ok(Some((kind, data))) = proto::read_frame(&mut rd).await {
                            let echo = match kind {
                                proto::STDIN => data,
                                proto::RESIZE => {
                                    let (c, r) = proto::parse_resize(&data).unwrap();
                                    format!("resized {c}x{r}").into_bytes()
                                }
                                _ => break,
                            };
                            proto::write_frame(&mut wr, proto::STDOUT, &echo).await.unwrap();
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            });
        }
    });
    (addr, tokens)
}

/// The harness token in sandbox `id`'s Secret.
fn harness_token(api: &FakeApi, id: &str) -> String {
    use base64::Engine;
    let secret = api.get("secrets", &format!("{id}-vault")).unwrap();
    let encoded = secret["data"][manifest::keys::HARNESS_TOKEN].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

#[tokio::test]
async fn the_agent_starts_runs_commands_and_is_waited_for_through_port_forward() {
    use lap::sandbox::{AgentStart, ExecChunk, ExecSpec};
    let (api, _url, kube) = backend().await;
    let (harness, tokens) = fake_harness().await;
    api.forward(manifest::HARNESS_PORT, harness);
    let sandbox = kube.create(&spec(Some("s-1"))).await.unwrap();
    let start = AgentStart {
        command: Some("bash".into()),
        ..AgentStart::default()
    };
    kube.start_agent(&sandbox.id, start).await.unwrap();
    let refused = AgentStart {
        command: Some("fail".into()),
        ..AgentStart::default()
    };
    assert_eq!(
        kube.start_agent(&sandbox.id, refused).await.unwrap_err().to_string(),
        "the sandbox backend failed: the agent could not start: no such program"
    );
    let (output, mut chunks) = tokio::sync::mpsc::channel(16);
    let exec = ExecSpec {
        argv: vec!["cat".into()],
        stdin: b"hello".to_vec(),
        ..ExecSpec::default()
    };
    assert_eq!(kube.exec(&sandbox.id, exec, output).await.unwrap(), 3);
    assert_eq!(
        chunks.recv().await,
        Some(ExecChunk::Stdout(b"[\"cat\"] stdin=hello".to_vec()))
    );
    assert_eq!(chunks.recv().await, Some(ExecChunk::Stderr(b"warn".to_vec())));
    assert_eq!(kube.wait_agent(&sandbox.id).await.unwrap(), 7);
    // Every connection opened with the sandbox's own harness token.
    let tokens = tokens.lock().unwrap().clone();
    let expected = harness_token(&api, &sandbox.id);
    assert_eq!(expected.len(), 64);
    assert_eq!(tokens, vec![expected; 4]);
}

#[tokio::test]
async fn a_viewer_attaches_to_the_agent_terminal_through_port_forward() {
    use lap::sandbox::{TtyInput, TtyOutput};
    let (api, _url, kube) = backend().await;
    api.forward(manifest::HARNESS_PORT, fake_harness().await.0);
    let sandbox = kube.create(&spec(Some("s-1"))).await.unwrap();
    let mut tty = kube.attach(&sandbox.id, 80, 24).await.unwrap();
    assert_eq!(
        tty.output.recv().await,
        Some(TtyOutput::Repaint(b"screen 80x24".to_vec()))
    );
    tty.input.send(TtyInput::Data(b"ls\r".to_vec())).await.unwrap();
    assert_eq!(tty.output.recv().await, Some(TtyOutput::Data(b"ls\r".to_vec())));
    tty.input.send(TtyInput::Resize { cols: 120, rows: 40 }).await.unwrap();
    assert_eq!(
        tty.output.recv().await,
        Some(TtyOutput::Data(b"resized 120x40".to_vec()))
    );
}

#[tokio::test]
async fn a_harness_that_does_not_listen_is_a_readable_error() {
    let (_api, _url, kube) = backend().await;
    let sandbox = kube.create(&spec(Some("s-1"))).await.unwrap();
    let err = kube.wait_agent(&sandbox.id).await.unwrap_err();
    assert!(matches!(err, lap::sandbox::SandboxError::Backend(_)), "{err}");
}

#[tokio::test]
async fn a_busy_api_server_is_asked_a_bounded_number_of_times_then_the_refusal_is_readable() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Every request answered 503, as by an overloaded or restarting API server.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable", "code": 503});
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = "lap".into();
    let kube = Kube::new(lap::sandbox::kube::retrying_client(config).unwrap(), self::config());
    let err = kube.list().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: the Kubernetes API refused: the server is currently unable to handle the request (ServiceUnavailable, HTTP 503)"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 5, "one call and four retries");
}

// --- workspaces ---

#[tokio::test]
async fn a_sessions_claim_outlives_its_pod_and_the_next_pod_mounts_it_again_until_it_is_deleted() {
    let (api, _url, kube) = workspace_backend().await;
    assert!(kube.keeps_workspaces());
    assert_eq!(kube.workspace(S1).await.unwrap(), None);
    let first = kube.create(&spec(Some(S1))).await.unwrap();
    let claim = work_claim(&api, &first.id);
    assert_eq!(claim, format!("lap-work-{S1}"));
    let made = api.get("persistentvolumeclaims", &claim).unwrap();
    assert_eq!(made["spec"]["storageClassName"], "fast");
    assert_eq!(made["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert!(
        made["metadata"]["ownerReferences"].is_null(),
        "a session's claim is owned by nothing: {made}"
    );
    assert_eq!(made["metadata"]["labels"][manifest::SESSION], S1);
    let kept = kube.workspace(S1).await.unwrap().unwrap();
    assert_eq!(kept.location, format!("kube://lap/persistentvolumeclaims/{claim}"));
    assert_eq!(kept.size_bytes, 2 << 30);
    // A hibernation deletes the pod (its Secret and policy go with it); the claim stays.
    kube.delete(&first.id).await.unwrap();
    assert!(api.names("pods").is_empty() && api.names("secrets").is_empty());
    assert_eq!(api.names("persistentvolumeclaims"), std::slice::from_ref(&claim));
    // The resume's pod mounts the same claim; no second one is made.
    let second = kube.create(&spec(Some(S1))).await.unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(work_claim(&api, &second.id), claim);
    assert_eq!(api.names("persistentvolumeclaims"), std::slice::from_ref(&claim));
    assert_eq!(kube.workspace_sessions().await.unwrap(), [S1]);
    // Deleted with the session; deleting again is fine.
    kube.delete(&second.id).await.unwrap();
    kube.delete_workspace(S1).await.unwrap();
    assert!(api.names("persistentvolumeclaims").is_empty());
    kube.delete_workspace(S1).await.unwrap();
    assert_eq!(kube.workspace(S1).await.unwrap(), None);
    assert!(kube.workspace_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_warm_pods_claim_goes_with_the_pod_unless_the_session_that_claimed_it_adopted_it() {
    let (api, _url, kube) = workspace_backend().await;
    let dropped = kube.create(&spec(None)).await.unwrap();
    let claim = work_claim(&api, &dropped.id);
    assert_eq!(claim, format!("{}-work", dropped.id));
    let made = api.get("persistentvolumeclaims", &claim).unwrap();
    assert_eq!(
        made["metadata"]["ownerReferences"][0]["uid"],
        format!("uid-pods-{}", dropped.id)
    );
    assert_eq!(made["metadata"]["labels"][manifest::WARM], "true");
    // The pool drops a warm pod: its claim is collected with it.
    kube.delete(&dropped.id).await.unwrap();
    assert!(api.names("persistentvolumeclaims").is_empty());
    // A session claims one and adopts its claim: owned by nothing, labelled with the session.
    let warm = kube.create(&spec(None)).await.unwrap();
    assert!(kube.claim(&warm.id, S1).await.unwrap());
    kube.adopt_workspace(&warm.id, S1).await.unwrap();
    let adopted = api.get("persistentvolumeclaims", &format!("{}-work", warm.id)).unwrap();
    assert!(adopted["metadata"]["ownerReferences"].is_null(), "{adopted}");
    assert_eq!(adopted["metadata"]["labels"][manifest::SESSION], S1);
    assert_eq!(adopted["metadata"]["labels"][manifest::WARM], "false");
    assert!(adopted["metadata"]["labels"][manifest::SANDBOX].is_null());
    // Its hibernation keeps it, and the resume mounts it.
    kube.delete(&warm.id).await.unwrap();
    assert_eq!(
        kube.workspace(S1).await.unwrap().unwrap().location,
        format!("kube://lap/persistentvolumeclaims/{}-work", warm.id)
    );
    let resumed = kube.create(&spec(Some(S1))).await.unwrap();
    assert_eq!(work_claim(&api, &resumed.id), format!("{}-work", warm.id));
    assert_eq!(api.names("persistentvolumeclaims").len(), 1);
}

#[tokio::test]
async fn a_warm_pod_made_without_a_claim_cannot_be_adopted_and_says_what_to_do() {
    let (api, url, _) = backend().await;
    let old = Kube::new(FakeApi::client(&url), config())
        .create(&spec(None))
        .await
        .unwrap();
    let kube = Kube::new(FakeApi::client(&url), workspace_config());
    let err = kube.adopt_workspace(&old.id, S1).await.unwrap_err().to_string();
    assert!(
        err.contains("has no workspace claim") && err.contains("delete it"),
        "{err}"
    );
    assert!(api.names("persistentvolumeclaims").is_empty());
}

#[tokio::test]
async fn a_snapshot_is_a_csi_volume_snapshot_of_the_claim_and_a_session_from_it_restores_it() {
    let (api, _url, kube) = workspace_backend().await;
    let pod = kube.create(&spec(Some(S1))).await.unwrap();
    let taken = kube.snapshot_workspace(S1, SNAP).await.unwrap();
    let name = format!("lap-snap-{SNAP}");
    assert_eq!(taken.location, format!("kube://lap/volumesnapshots/{name}"));
    assert_eq!(
        taken.size_bytes,
        2 << 30,
        "the restore size the snapshot controller reported"
    );
    assert_eq!(kube.snapshot_location(SNAP).unwrap(), taken.location);
    let snapshot = api.get("volumesnapshots", &name).unwrap();
    assert_eq!(snapshot["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(
        snapshot["spec"]["source"]["persistentVolumeClaimName"],
        work_claim(&api, &pod.id)
    );
    assert_eq!(snapshot["spec"]["volumeSnapshotClassName"], "csi-snap");
    // A new session from it: a claim whose data source is the snapshot.
    let restored = kube.copy_workspace(WorkspaceSource::Snapshot(SNAP), S2).await.unwrap();
    let claim = api.get("persistentvolumeclaims", &format!("lap-work-{S2}")).unwrap();
    assert_eq!(
        claim["spec"]["dataSource"],
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name})
    );
    assert_eq!(
        restored.location,
        format!("kube://lap/persistentvolumeclaims/lap-work-{S2}")
    );
    // Its pod mounts that claim.
    let pod2 = kube.create(&spec(Some(S2))).await.unwrap();
    assert_eq!(work_claim(&api, &pod2.id), format!("lap-work-{S2}"));
    // Deleting the snapshot deletes the VolumeSnapshot; the restored claim is its own.
    kube.delete_workspace_snapshot(SNAP).await.unwrap();
    assert!(api.names("volumesnapshots").is_empty());
    kube.delete_workspace_snapshot(SNAP).await.unwrap();
    assert!(api.get("persistentvolumeclaims", &format!("lap-work-{S2}")).is_some());
    // A session from a snapshot that is gone is refused, naming it.
    let err = kube
        .copy_workspace(WorkspaceSource::Snapshot(SNAP), S3)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::NotFound(ref what) if what.contains(&name)),
        "{err}"
    );
}

#[tokio::test]
async fn a_fork_is_a_clone_of_the_source_claim_of_its_class_and_size() {
    let (api, _url, kube) = workspace_backend().await;
    kube.create(&spec(Some(S1))).await.unwrap();
    kube.copy_workspace(WorkspaceSource::Session(S1), S2).await.unwrap();
    let clone = api.get("persistentvolumeclaims", &format!("lap-work-{S2}")).unwrap();
    assert_eq!(
        clone["spec"]["dataSource"],
        json!({"kind": "PersistentVolumeClaim", "name": format!("lap-work-{S1}")})
    );
    assert_eq!(clone["spec"]["storageClassName"], "fast");
    assert_eq!(clone["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(clone["metadata"]["labels"][manifest::SESSION], S2);
    // Forking onto a session that has a claim already is refused, and nothing is replaced.
    let err = kube.copy_workspace(WorkspaceSource::Session(S1), S2).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::Unsupported { ref what, .. } if what.contains("exists already")),
        "{err}"
    );
    // Forking a session that has no claim says so.
    let err = kube.copy_workspace(WorkspaceSource::Session(S3), S2).await.unwrap_err();
    assert!(matches!(err, SandboxError::NotFound(_)), "{err}");
    let mut sessions = kube.workspace_sessions().await.unwrap();
    sessions.sort();
    assert_eq!(sessions, [S1, S2]);
}

#[tokio::test]
async fn a_cluster_without_the_snapshot_api_refuses_snapshots_with_a_hint_and_still_forks_by_clone() {
    let (api, _url, kube) = workspace_backend().await;
    api.without_snapshot_api();
    kube.create(&spec(Some(S1))).await.unwrap();
    let err = kube.snapshot_workspace(S1, SNAP).await.unwrap_err();
    let SandboxError::Unsupported { what, hint } = &err else {
        panic!("not a refusal with a hint: {err:?}");
    };
    assert!(
        what.contains("serves no CSI snapshot API") && what.contains("snapshot.storage.k8s.io/v1"),
        "{what}"
    );
    assert!(
        hint.contains("external-snapshotter") && hint.contains("lap sessions fork"),
        "{hint}"
    );
    let err = kube
        .copy_workspace(WorkspaceSource::Snapshot(SNAP), S2)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Unsupported { .. }), "{err}");
    // Nothing was posted to the missing group: discovery was asked, once.
    let asked: Vec<String> = api
        .seen()
        .into_iter()
        .filter(|l| l.contains("snapshot.storage.k8s.io"))
        .collect();
    assert_eq!(asked, ["GET /apis/snapshot.storage.k8s.io/v1"]);
    // Deleting a snapshot that cannot exist is fine; a fork clones the claim.
    kube.delete_workspace_snapshot(SNAP).await.unwrap();
    kube.copy_workspace(WorkspaceSource::Session(S1), S2).await.unwrap();
    assert_eq!(api.names("persistentvolumeclaims").len(), 2);
}

/// A backend keeping workspaces that waits at most one second for a snapshot.
async fn impatient_backend() -> (FakeApi, Kube) {
    let (api, url) = FakeApi::start().await;
    let config = KubeConfig {
        ready_timeout: Duration::from_secs(1),
        ..workspace_config()
    };
    (api, Kube::new(FakeApi::client(&url), config))
}

#[tokio::test]
async fn a_snapshot_the_controller_keeps_failing_is_deleted_at_the_deadline_with_its_error() {
    let (api, kube) = impatient_backend().await;
    kube.create(&spec(Some(S1))).await.unwrap();
    api.new_snapshots_get(
        json!({"readyToUse": false, "error": {"message": "the CSI driver does not support snapshots"}}),
    );
    let err = kube.snapshot_workspace(S1, SNAP).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the VolumeSnapshot `lap-snap-{SNAP}` was not ready within 1s (the snapshot controller says: the CSI driver does not support snapshots)"
        )),
        "{err}"
    );
    assert!(api.names("volumesnapshots").is_empty());
    // A session without a claim has nothing to snapshot.
    let err = kube.snapshot_workspace(S2, SNAP).await.unwrap_err();
    assert!(matches!(err, SandboxError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_snapshot_that_never_gets_ready_times_out_and_is_deleted() {
    let (api, kube) = impatient_backend().await;
    kube.create(&spec(Some(S1))).await.unwrap();
    api.new_snapshots_get(json!({"readyToUse": false}));
    let err = kube.snapshot_workspace(S1, SNAP).await.unwrap_err().to_string();
    assert!(
        err.contains("was not ready within 1s") && err.contains("kubectl -n lap describe volumesnapshot"),
        "{err}"
    );
    assert!(api.names("volumesnapshots").is_empty());
}

#[tokio::test]
async fn pausing_a_kube_sandbox_is_refused_with_hibernate_as_the_hint() {
    let (_api, _url, kube) = workspace_backend().await;
    let sandbox = kube.create(&spec(Some(S1))).await.unwrap();
    let err = kube.pause(&sandbox.id).await.unwrap_err();
    let SandboxError::Unsupported { what, hint } = &err else {
        panic!("{err:?}");
    };
    assert!(what.contains("cannot pause"), "{what}");
    assert!(hint.contains("lap sessions hibernate"), "{hint}");
}

#[tokio::test]
async fn without_workspaces_pods_keep_an_empty_dir_and_make_no_claim() {
    let (api, _url, kube) = backend().await;
    assert!(!kube.keeps_workspaces());
    let pod = kube.create(&spec(Some(S1))).await.unwrap();
    let volume = api.get("pods", &pod.id).unwrap()["spec"]["volumes"][0].clone();
    assert_eq!(volume, json!({"name": "work", "emptyDir": {}}));
    assert!(api.names("persistentvolumeclaims").is_empty());
    assert!(kube.workspace_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_claim_deleted_while_its_pod_runs_is_gone_for_lap_at_once_and_from_the_cluster_with_the_pod() {
    let (api, _url, kube) = workspace_backend().await;
    let pod = kube.create(&spec(Some(S1))).await.unwrap();
    let claim = format!("lap-work-{S1}");
    kube.delete_workspace(S1).await.unwrap();
    // The pvc-protection finalizer keeps it while the pod mounts it; lap no longer counts it.
    let marked = api.get("persistentvolumeclaims", &claim).unwrap();
    assert!(!marked["metadata"]["deletionTimestamp"].is_null(), "{marked}");
    assert_eq!(kube.workspace(S1).await.unwrap(), None);
    assert!(kube.workspace_sessions().await.unwrap().is_empty());
    kube.delete_workspace(S1).await.unwrap();
    kube.delete(&pod.id).await.unwrap();
    assert!(api.names("persistentvolumeclaims").is_empty());
}
