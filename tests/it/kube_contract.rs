//! The Kubernetes backend against a mock API server (tower-test): the exact requests it sends —
//! method, path, query, the body fields that matter — for create, claim, delete, adoption after a
//! restart and each failure path, and what it makes of the answers.
//!
//! No cluster is involved: these tests pin the API contract only (see docs/operating/kubernetes.md).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use lap::sandbox::kube::manifest;
use lap::sandbox::kube::{Kube, KubeConfig, VaultBinding};
use lap::sandbox::{LimitOverrides, Sandbox, SandboxError, SandboxSpec};
use serde_json::{Value, json};

/// The system roots the backend is given: each pod's bundle is these, then its own CA.
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nROOTS\n-----END CERTIFICATE-----\n";

const NS: &str = "lap";
const PODS: &str = "/api/v1/namespaces/lap/pods";
const SECRETS: &str = "/api/v1/namespaces/lap/secrets";
const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/lap/networkpolicies";

/// One request the backend sent.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

type Reply = (StatusCode, Value);

/// A mock API server answering with `respond`, and everything it was sent.
struct Mock {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    fn start(mut respond: impl FnMut(&Seen) -> Reply + Send + 'static) -> (kube::Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = percent_decode(request.uri().query().unwrap_or_default());
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let seen = Seen {
                    method,
                    path,
                    query,
                    content_type,
                    body,
                };
                let (status, reply) = respond(&seen);
                log.lock().unwrap().push(seen);
                send.send_response(
                    Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, NS), Self { seen, task })
    }

    fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(Seen::line).collect()
    }

    fn request(&self, index: usize) -> Seen {
        self.seen.lock().unwrap()[index].clone()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn percent_decode(query: &str) -> String {
    query.replace("%2C", ",").replace("%3D", "=").replace("%2F", "/")
}

fn config() -> KubeConfig {
    KubeConfig {
        namespace: NS.into(),
        image: "lap-sandbox:dev".into(),
        defaults: manifest::Resources::harness_default(),
        system_roots_pem: ROOTS.into(),
        ready_timeout: Duration::from_secs(30),
        reach: lap::sandbox::kube::Reach::PortForward,
        workspace: None,
        vault: lap::sandbox::kube::KubeVault::Sidecar,
    }
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        harness_id: "shell".into(),
        session_id: Some("s-1".into()),
        env: vec![("GITHUB_TOKEN".into(), "stub_github_token_3fa91c0d".into())],
        limits: LimitOverrides {
            memory_bytes: Some(1 << 30),
            ..LimitOverrides::default()
        },
        ..SandboxSpec::default()
    }
}

/// The API server's answer to a create: the object with a uid and a resourceVersion.
fn created(seen: &Seen) -> Reply {
    let mut object = seen.body.clone();
    object["metadata"]["uid"] = json!("uid-of-the-pod");
    object["metadata"]["resourceVersion"] = json!("100");
    (StatusCode::CREATED, object)
}

fn status_reply(code: StatusCode, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn pod(name: &str, labels: Value, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "resourceVersion": "7", "labels": labels},
           "spec": {"containers": [{"name": "harness", "image": "lap-sandbox:dev"}]},
           "status": status})
}

fn ready_status() -> Value {
    json!({"phase": "Running", "containerStatuses": [
        {"name": "harness", "ready": true, "restartCount": 0, "image": "i", "imageID": ""},
        {"name": "vault", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]})
}

fn labels(id: &str, session: Option<&str>) -> Value {
    let mut labels = json!({manifest::MANAGED_BY: "lap", manifest::NAME: "lap-sandbox",
                            manifest::SANDBOX: id, manifest::HARNESS: "shell",
                            manifest::WARM: session.is_none().to_string()});
    if let Some(session) = session {
        labels[manifest::SESSION] = json!(session);
    }
    labels
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "200"}, "items": items})
}

#[tokio::test]
async fn create_posts_pod_then_owned_secret_and_policy_then_waits_until_ready() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::POST, _) => created(seen),
        (Method::GET, path) if path.starts_with(PODS) => {
            let name = path.rsplit('/').next().unwrap();
            (StatusCode::OK, pod(name, labels(name, Some("s-1")), ready_status()))
        }
        _ => panic!("unexpected {}", seen.line()),
    });
    let kube = Kube::new(client, config());
    let info = kube.create_with_id("lap-test", &spec()).await.unwrap();
    assert_eq!(info.id, "lap-test");
    assert_eq!(info.url, "kube://lap/lap-test");
    assert_eq!(info.session_id.as_deref(), Some("s-1"));
    assert_eq!(
        mock.lines(),
        [
            format!("POST {PODS}?"),
            format!("POST {SECRETS}?"),
            format!("POST {POLICIES}?"),
            format!("GET {PODS}/lap-test"),
        ]
        .map(|l| l.trim_end_matches('?').to_owned())
    );
    let pod = mock.request(0).body;
    assert_eq!(pod["metadata"]["name"], "lap-test");
    assert_eq!(pod["metadata"]["labels"][manifest::SESSION], "s-1");
    assert_eq!(pod["metadata"]["labels"][manifest::WARM], "false");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "1073741824"
    );
    let secret = mock.request(1).body;
    assert_eq!(secret["metadata"]["name"], "lap-test-vault");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-of-the-pod");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Pod");
    // A new sandbox's vault starts with an empty binding; credentials come with `bind`.
    let binding = secret["data"][manifest::keys::BINDING].as_str().unwrap();
    use base64::Engine;
    let binding = base64::engine::general_purpose::STANDARD.decode(binding).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&binding).unwrap()["credentials"],
        json!([])
    );
    let token = secret["data"][manifest::keys::ADMIN_TOKEN].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(token).unwrap().len(),
        64
    );
    // The pod's vault CA is made for it: named after it, and its harness trusts the roots and it.
    let file = |key: &str| {
        let data = secret["data"][key].as_str().unwrap();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
    };
    let ca = file(manifest::keys::CA_CERT);
    assert!(file(manifest::keys::CA_KEY).starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(file(manifest::keys::CA_BUNDLE), format!("{ROOTS}{ca}"));
    let der: rustls_pki_types::CertificateDer<'_> =
        rustls_pki_types::pem::PemObject::from_pem_slice(ca.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "O=lap, CN=lap egress vault CA for lap-test");
    let policy = mock.request(2).body;
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"][manifest::SANDBOX],
        "lap-test"
    );
    assert_eq!(policy["metadata"]["ownerReferences"][0]["uid"], "uid-of-the-pod");
}

#[tokio::test(start_paused = true)]
async fn an_image_pull_failure_fails_create_with_the_reason_and_deletes_everything() {
    let mut gets = 0;
    let (client, mock) = Mock::start(move |seen| match seen.method.clone() {
        Method::POST => created(seen),
        Method::GET => {
            gets += 1;
            let status = if gets == 1 {
                json!({"phase": "Pending"})
            } else {
                json!({"phase": "Pending", "containerStatuses": [{"name": "harness", "ready": false,
                    "restartCount": 0, "image": "lap-sandbox:dev", "imageID": "",
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]})
            };
            (StatusCode::OK, pod("lap-test", labels("lap-test", Some("s-1")), status))
        }
        Method::DELETE if seen.path.starts_with(PODS) => (
            StatusCode::OK,
            pod("lap-test", labels("lap-test", Some("s-1")), json!({})),
        ),
        Method::DELETE => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    let kube = Kube::new(client, config());
    let err = kube.create_with_id("lap-test", &spec()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the sandbox backend failed: cannot pull the image of container `harness` (ErrImagePull): not found; {}",
            lap::sandbox::kube::status::PULL_ADVICE
        )
    );
    let lines = mock.lines();
    assert_eq!(
        &lines[3..],
        [
            format!("GET {PODS}/lap-test"),
            format!("GET {PODS}/lap-test"),
            format!("DELETE {PODS}/lap-test"),
            format!("DELETE {SECRETS}/lap-test-vault"),
            format!("DELETE {POLICIES}/lap-test-egress"),
        ]
    );
    assert_eq!(mock.request(5).body["gracePeriodSeconds"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_never_gets_ready_times_out_naming_where_it_stuck() {
    let (client, _mock) = Mock::start(|seen| match seen.method.clone() {
        Method::POST => created(seen),
        Method::GET => (
            StatusCode::OK,
            pod(
                "lap-test",
                labels("lap-test", None),
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
            ),
        ),
        Method::DELETE => status_reply(StatusCode::NOT_FOUND, "NotFound", "gone"),
        _ => panic!("unexpected {}", seen.line()),
    });
    let mut config = config();
    config.ready_timeout = Duration::from_secs(5);
    let err = Kube::new(client, config)
        .create_with_id("lap-test", &spec())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: the sandbox pod `lap-test` was not ready within 5s \
         (unschedulable: 0/1 nodes are available)"
    );
}

#[tokio::test]
async fn a_forbidden_create_says_what_the_api_refused_and_sends_nothing_more() {
    let (client, mock) = Mock::start(|seen| {
        status_reply(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "pods is forbidden: User \"dev\" cannot create resource \"pods\" ({})",
                seen.path
            ),
        )
    });
    let err = Kube::new(client, config())
        .create_with_id("lap-test", &spec())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the sandbox backend failed: the Kubernetes API refused: pods is forbidden"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with(
            "(Forbidden, HTTP 403); the user or service account needs the Role in `kind/rbac.yaml` in this namespace; see docs/troubleshooting.md#kube-forbidden"
        ),
        "{err}"
    );
    assert_eq!(mock.lines(), [format!("POST {PODS}")]);
}

#[tokio::test]
async fn a_secret_that_cannot_be_made_deletes_the_pod_again() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::POST, PODS) => created(seen),
        (Method::POST, _) => status_reply(
            StatusCode::CONFLICT,
            "AlreadyExists",
            "secrets \"lap-test-vault\" already exists",
        ),
        (Method::DELETE, _) => status_reply(StatusCode::NOT_FOUND, "NotFound", "gone"),
        _ => panic!("unexpected {}", seen.line()),
    });
    let err = Kube::new(client, config())
        .create_with_id("lap-test", &spec())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already exists (AlreadyExists, HTTP 409)"),
        "{err}"
    );
    assert_eq!(
        mock.lines(),
        [
            format!("POST {PODS}"),
            format!("POST {SECRETS}"),
            format!("DELETE {PODS}/lap-test"),
            format!("DELETE {SECRETS}/lap-test-vault"),
            format!("DELETE {POLICIES}/lap-test-egress"),
        ]
    );
}

#[tokio::test]
async fn claim_patches_the_labels_with_the_read_resource_version_and_reads_again_after_a_conflict() {
    let mut reads = 0;
    let (client, mock) = Mock::start(move |seen| match seen.method.clone() {
        Method::GET => {
            reads += 1;
            let mut warm = pod("lap-a", labels("lap-a", None), ready_status());
            warm["metadata"]["resourceVersion"] = json!((6 + reads).to_string());
            (StatusCode::OK, warm)
        }
        // The first patch is stale: the pod changed since it was read.
        Method::PATCH if seen.body["metadata"]["resourceVersion"] == "7" => {
            status_reply(StatusCode::CONFLICT, "Conflict", "the object has been modified")
        }
        Method::PATCH => {
            let mut claimed = pod("lap-a", labels("lap-a", Some("s-9")), ready_status());
            claimed["metadata"]["resourceVersion"] = json!("9");
            (StatusCode::OK, claimed)
        }
        _ => panic!("unexpected {}", seen.line()),
    });
    assert!(Kube::new(client, config()).claim("lap-a", "s-9").await.unwrap());
    assert_eq!(
        mock.lines(),
        [
            format!("GET {PODS}/lap-a"),
            format!("PATCH {PODS}/lap-a"),
            format!("GET {PODS}/lap-a"),
            format!("PATCH {PODS}/lap-a"),
        ]
    );
    for (index, version) in [(1, "7"), (3, "8")] {
        let patch = mock.request(index);
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(patch.body["metadata"]["resourceVersion"], version, "the precondition");
        assert_eq!(patch.body["metadata"]["labels"][manifest::WARM], "false");
        assert_eq!(patch.body["metadata"]["labels"][manifest::SESSION], "s-9");
    }
}

#[tokio::test]
async fn claim_of_a_pod_that_failed_was_taken_or_is_gone_patches_nothing() {
    let failed = json!({"phase": "Running", "containerStatuses": [{"name": "vault", "ready": false,
        "restartCount": 3, "image": "i", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
    let cases = [
        ("failed", (StatusCode::OK, pod("lap-a", labels("lap-a", None), failed))),
        (
            "taken",
            (
                StatusCode::OK,
                pod("lap-a", labels("lap-a", Some("s-1")), ready_status()),
            ),
        ),
        (
            "gone",
            status_reply(StatusCode::NOT_FOUND, "NotFound", "pods \"lap-a\" not found"),
        ),
    ];
    for (case, reply) in cases {
        let (client, mock) = Mock::start(move |_| reply.clone());
        assert!(
            !Kube::new(client, config()).claim("lap-a", "s-9").await.unwrap(),
            "{case}"
        );
        assert_eq!(mock.lines(), [format!("GET {PODS}/lap-a")], "{case}");
    }
}

#[tokio::test]
async fn a_claim_the_api_server_refuses_is_an_error_naming_the_refusal() {
    let (client, _mock) = Mock::start(|seen| match seen.method {
        Method::GET => (StatusCode::OK, pod("lap-a", labels("lap-a", None), ready_status())),
        _ => status_reply(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "pods \"lap-a\" is forbidden: cannot patch",
        ),
    });
    let err = Kube::new(client, config()).claim("lap-a", "s-9").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: the Kubernetes API refused: pods \"lap-a\" is forbidden: cannot patch (Forbidden, HTTP 403); \
         the user or service account needs the Role in `kind/rbac.yaml` in this namespace; see docs/troubleshooting.md#kube-forbidden"
    );
}

#[tokio::test]
async fn delete_removes_pod_secret_and_policy_and_already_gone_is_fine() {
    let (client, mock) = Mock::start(|seen| match seen.method.clone() {
        Method::DELETE if seen.path.starts_with(PODS) => {
            (StatusCode::OK, pod("lap-x", labels("lap-x", Some("s")), json!({})))
        }
        Method::DELETE => status_reply(StatusCode::NOT_FOUND, "NotFound", "not found"),
        _ => panic!("unexpected {}", seen.line()),
    });
    Kube::new(client, config()).delete("lap-x").await.unwrap();
    assert_eq!(
        mock.lines(),
        [
            format!("DELETE {PODS}/lap-x"),
            format!("DELETE {SECRETS}/lap-x-vault"),
            format!("DELETE {POLICIES}/lap-x-egress"),
        ]
    );
}

#[tokio::test]
async fn delete_reports_a_refusal_other_than_not_found_after_trying_every_object() {
    let (client, mock) = Mock::start(|_| status_reply(StatusCode::FORBIDDEN, "Forbidden", "no delete for you"));
    let err = Kube::new(client, config()).delete("lap-x").await.unwrap_err();
    assert!(matches!(err, SandboxError::Backend(_)), "{err}");
    assert_eq!(mock.lines().len(), 3);
}

#[tokio::test]
async fn a_restarted_server_adopts_managed_pods_by_label() {
    let mut deleting = pod("lap-c", labels("lap-c", Some("s-3")), ready_status());
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-03T07:00:00Z");
    let items = vec![
        pod("lap-a", labels("lap-a", Some("s-1")), ready_status()),
        pod("lap-b", labels("lap-b", None), ready_status()),
        deleting,
    ];
    let (client, mock) = Mock::start(move |_| (StatusCode::OK, list(items.clone())));
    let adopted = Kube::new(client, config()).list().await.unwrap();
    let ids: Vec<(&str, Option<&str>)> = adopted
        .iter()
        .map(|s| (s.id.as_str(), s.session_id.as_deref()))
        .collect();
    assert_eq!(ids, [("lap-a", Some("s-1")), ("lap-b", None)]);
    assert_eq!(adopted[0].harness_id, "shell");
    assert_eq!(
        mock.lines(),
        [format!(
            "GET {PODS}?&labelSelector=app.kubernetes.io/managed-by=lap,app.kubernetes.io/name=lap-sandbox"
        )]
    );
}

#[tokio::test]
async fn bind_writes_the_secret_then_dials_the_vault_admin_port_through_port_forward() {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode("the-admin-token");
    let harness_token = base64::engine::general_purpose::STANDARD.encode("the-harness-token");
    let (client, mock) = Mock::start(move |seen| match seen.method.clone() {
        Method::PATCH => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lap-x-vault"},
                   "data": {manifest::keys::ADMIN_TOKEN: token, manifest::keys::HARNESS_TOKEN: harness_token}}),
        ),
        // Not upgraded: the port-forward is refused.
        Method::GET => status_reply(StatusCode::FORBIDDEN, "Forbidden", "pods/portforward is forbidden"),
        _ => panic!("unexpected {}", seen.line()),
    });
    let binding = VaultBinding {
        credentials: vec![lap::sandbox::kube::BoundCredential {
            name: "GITHUB_TOKEN".into(),
            stub: "stub_github_token_3fa91c0d".into(),
            value: lap::secret::Secret::new("ghp_real"),
            hosts: vec!["api.github.com".into()],
            inject: lap::wire::vault::default_injection("GITHUB_TOKEN"),
            rules: Vec::new(),
        }],
        ..VaultBinding::default()
    };
    let err = Kube::new(client, config()).bind("lap-x", &binding).await.unwrap_err();
    assert!(matches!(err, SandboxError::Backend(_)), "{err}");
    assert_eq!(
        mock.lines(),
        [
            format!("PATCH {SECRETS}/lap-x-vault"),
            format!("GET {PODS}/lap-x/portforward?&ports=7071")
        ]
    );
    let patch = mock.request(0);
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let written = patch.body["data"][manifest::keys::BINDING].as_str().unwrap();
    let written: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(written).unwrap()).unwrap();
    assert_eq!(written["credentials"][0]["value"], "ghp_real");
    assert_eq!(written["credentials"][0]["hosts"], json!(["api.github.com"]));
}

#[tokio::test]
async fn check_asks_the_api_server_for_its_version() {
    let (client, mock) = Mock::start(|_| {
        (
            StatusCode::OK,
            json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "", "gitTreeState": "",
                   "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
        )
    });
    let kube = Kube::new(client, config());
    kube.check().await.unwrap();
    assert_eq!(kube.server_version().await.unwrap(), "v1.35.0");
    assert_eq!(mock.lines(), ["GET /version", "GET /version"]);
}

#[tokio::test]
async fn the_vault_of_a_kube_sandbox_is_never_served_by_lap_serve() {
    let (client, mock) = Mock::start(|seen| panic!("unexpected {}", seen.line()));
    let err = Kube::new(client, config()).proxy_listener("lap-x").await.err().unwrap();
    assert!(err.to_string().contains("runs in its pod's sidecar"), "{err}");
    assert!(mock.lines().is_empty());
}

#[tokio::test]
async fn reached_by_pod_ip_the_backend_reads_the_pod_for_its_ip_and_never_asks_for_a_port_forward() {
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let (client, mock) = Mock::start(move |seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, path) if path.ends_with("/lap-x-vault") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lap-x-vault"},
                   "data": {manifest::keys::ADMIN_TOKEN: b64("a"), manifest::keys::HARNESS_TOKEN: b64("h")}}),
        ),
        // Scheduled, not yet given an IP.
        (Method::GET, _) => (
            StatusCode::OK,
            pod("lap-x", labels("lap-x", Some("s-1")), json!({"phase": "Pending"})),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    let config = KubeConfig {
        reach: lap::sandbox::kube::Reach::PodIp,
        ..config()
    };
    let err = Kube::new(client, config).wait_agent("lap-x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: the sandbox pod `lap-x` has no IP yet"
    );
    assert_eq!(
        mock.lines(),
        [format!("GET {SECRETS}/lap-x-vault"), format!("GET {PODS}/lap-x")]
    );
}

#[tokio::test]
async fn a_pod_ip_nothing_answers_on_is_an_error_that_says_to_use_port_forward_from_outside() {
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    // An address of the host's loopback nothing listens on: refused at once, nothing leaves the host.
    let (client, _mock) = Mock::start(move |seen| match seen.path.as_str() {
        path if path.ends_with("/lap-x-vault") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lap-x-vault"},
                   "data": {manifest::keys::ADMIN_TOKEN: b64("a"), manifest::keys::HARNESS_TOKEN: b64("h")}}),
        ),
        _ => {
            let mut status = ready_status();
            status["podIP"] = json!("127.255.255.254");
            (StatusCode::OK, pod("lap-x", labels("lap-x", Some("s-1")), status))
        }
    });
    let config = KubeConfig {
        reach: lap::sandbox::kube::Reach::PodIp,
        ..config()
    };
    let err = Kube::new(client, config)
        .wait_agent("lap-x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the sandbox backend failed: cannot reach the sandbox pod `lap-x` at 127.255.255.254:7070: "),
        "{err}"
    );
    assert!(
        err.ends_with(
            "from outside it, run `lap serve --kube-reach port-forward`; see docs/troubleshooting.md#kube-pod-ip)"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_namespace_that_does_not_exist_is_an_error_that_says_how_to_make_it() {
    let (client, _mock) =
        Mock::start(|_| status_reply(StatusCode::NOT_FOUND, "NotFound", "namespaces \"lap\" not found"));
    let err = Kube::new(client, config()).create(&spec()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: the Kubernetes API refused: namespaces \"lap\" not found (NotFound, HTTP 404); \
         create the namespace (`kubectl apply -f kind/namespace.yaml` makes `lap`) or pass `--kube-namespace`; see docs/troubleshooting.md#kube-namespace"
    );
}

// --- workspaces: claims and snapshots ---

const CLAIMS: &str = "/api/v1/namespaces/lap/persistentvolumeclaims";
const SNAPSHOTS: &str = "/apis/snapshot.storage.k8s.io/v1/namespaces/lap/volumesnapshots";
const CLAIM_SELECTOR: &str = "&labelSelector=app.kubernetes.io/managed-by=lap,app.kubernetes.io/name=lap-workspace";

fn workspace_config() -> KubeConfig {
    KubeConfig {
        workspace: Some(manifest::WorkspaceStorage {
            class: None,
            size: "5Gi".into(),
            snapshot_class: None,
        }),
        ..config()
    }
}

fn claim_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {"resourceVersion": "9"}, "items": items})
}

fn claim(name: &str, session: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": NS, "labels": {manifest::SESSION: session}},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gold", "resources": {"requests": {"storage": "8Gi"}}},
           "status": {"phase": "Bound", "capacity": {"storage": "8Gi"}}})
}

#[tokio::test]
async fn a_session_pod_looks_for_the_sessions_claim_by_label_makes_one_when_there_is_none_then_the_pod() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, CLAIMS) => (StatusCode::OK, claim_list(vec![])),
        (Method::POST, _) => created(seen),
        (Method::GET, path) if path.starts_with(PODS) => (
            StatusCode::OK,
            pod("lap-test", labels("lap-test", Some("s-1")), ready_status()),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    Kube::new(client, workspace_config())
        .create_with_id("lap-test", &spec())
        .await
        .unwrap();
    assert_eq!(
        mock.lines(),
        [
            format!("GET {CLAIMS}?{CLAIM_SELECTOR},lap.dev/session=s-1"),
            format!("POST {CLAIMS}"),
            format!("POST {PODS}"),
            format!("POST {SECRETS}"),
            format!("POST {POLICIES}"),
            format!("GET {PODS}/lap-test"),
        ]
    );
    let made = mock.request(1).body;
    assert_eq!(made["metadata"]["name"], "lap-work-s-1");
    assert_eq!(made["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert!(
        made["spec"].get("storageClassName").is_none(),
        "the cluster's default class: {made}"
    );
    assert!(made["metadata"].get("ownerReferences").is_none(), "{made}");
    let pod = mock.request(2).body;
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "lap-work-s-1"
    );
}

#[tokio::test]
async fn a_resumed_session_pod_mounts_the_claim_it_finds_and_makes_none() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, CLAIMS) => (StatusCode::OK, claim_list(vec![claim("lap-old-work", "s-1")])),
        (Method::POST, _) => created(seen),
        (Method::GET, _) => (
            StatusCode::OK,
            pod("lap-test", labels("lap-test", Some("s-1")), ready_status()),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    Kube::new(client, workspace_config())
        .create_with_id("lap-test", &spec())
        .await
        .unwrap();
    let lines = mock.lines();
    assert_eq!(lines[1], format!("POST {PODS}"), "{lines:?}");
    assert!(!lines.iter().any(|l| l == &format!("POST {CLAIMS}")), "{lines:?}");
    assert_eq!(
        mock.request(1).body["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "lap-old-work"
    );
}

#[tokio::test]
async fn a_warm_pod_gets_a_claim_owned_by_it_after_the_pod_and_before_its_secret() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::POST, _) => created(seen),
        (Method::GET, _) => (
            StatusCode::OK,
            pod("lap-warm", labels("lap-warm", None), ready_status()),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    let warm = SandboxSpec {
        session_id: None,
        ..spec()
    };
    Kube::new(client, workspace_config())
        .create_with_id("lap-warm", &warm)
        .await
        .unwrap();
    assert_eq!(
        mock.lines(),
        [
            format!("POST {PODS}"),
            format!("POST {CLAIMS}"),
            format!("POST {SECRETS}"),
            format!("POST {POLICIES}"),
            format!("GET {PODS}/lap-warm"),
        ]
    );
    let claim = mock.request(1).body;
    assert_eq!(claim["metadata"]["name"], "lap-warm-work");
    assert_eq!(claim["metadata"]["ownerReferences"][0]["uid"], "uid-of-the-pod");
    assert_eq!(
        mock.request(0).body["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "lap-warm-work"
    );
}

#[tokio::test]
async fn adopting_a_warm_claim_is_one_merge_patch_that_drops_its_owner() {
    let (client, mock) = Mock::start(|seen| match seen.method.clone() {
        Method::PATCH => (StatusCode::OK, claim("lap-warm-work", "s-1")),
        _ => panic!("unexpected {}", seen.line()),
    });
    Kube::new(client, workspace_config())
        .adopt_workspace("lap-warm", "s-1")
        .await
        .unwrap();
    assert_eq!(
        mock.lines(),
        [format!("PATCH {CLAIMS}/lap-warm-work?")].map(|l| l.trim_end_matches('?').to_owned())
    );
    let patch = mock.request(0);
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, manifest::adopt_claim_patch("s-1"));
}

#[tokio::test]
async fn a_snapshot_asks_discovery_once_then_posts_the_volume_snapshot_and_reads_it_until_ready() {
    let gets = Arc::new(Mutex::new(0));
    let counter = gets.clone();
    let (client, mock) = Mock::start(move |seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, "/apis/snapshot.storage.k8s.io/v1") => (
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "snapshot.storage.k8s.io/v1",
                   "resources": [{"name": "volumesnapshots", "singularName": "volumesnapshot", "namespaced": true,
                                  "kind": "VolumeSnapshot", "verbs": ["create", "get", "delete"]}]}),
        ),
        (Method::GET, CLAIMS) => (StatusCode::OK, claim_list(vec![claim("lap-work-s-1", "s-1")])),
        (Method::POST, SNAPSHOTS) => created(seen),
        (Method::GET, _) => {
            let mut n = counter.lock().unwrap();
            *n += 1;
            let mut snapshot = seen.body.clone();
            snapshot = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "lap-snap-x", "namespace": NS}, "spec": snapshot["spec"].take()});
            snapshot["status"] = if *n < 2 {
                json!({"readyToUse": false})
            } else {
                json!({"readyToUse": true, "restoreSize": "8Gi"})
            };
            (StatusCode::OK, snapshot)
        }
        (Method::DELETE, _) => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    let kube = Kube::new(client, workspace_config());
    let taken = kube.snapshot_workspace("s-1", "x").await.unwrap();
    assert_eq!(taken.size_bytes, 8 << 30);
    assert_eq!(taken.location, "kube://lap/volumesnapshots/lap-snap-x");
    kube.delete_workspace_snapshot("x").await.unwrap();
    assert_eq!(
        mock.lines(),
        [
            "GET /apis/snapshot.storage.k8s.io/v1".to_owned(),
            format!("GET {CLAIMS}?{CLAIM_SELECTOR},lap.dev/session=s-1"),
            format!("POST {SNAPSHOTS}"),
            format!("GET {SNAPSHOTS}/lap-snap-x"),
            format!("GET {SNAPSHOTS}/lap-snap-x"),
            format!("DELETE {SNAPSHOTS}/lap-snap-x"),
        ]
    );
    let posted = mock.request(2).body;
    assert_eq!(
        posted["spec"],
        json!({"source": {"persistentVolumeClaimName": "lap-work-s-1"}})
    );
    assert_eq!(posted["metadata"]["labels"][manifest::SESSION], "s-1");
}

#[tokio::test]
async fn a_snapshot_on_a_cluster_without_the_api_sends_nothing_but_discovery() {
    let (client, mock) = Mock::start(|seen| match seen.path.as_str() {
        "/apis/snapshot.storage.k8s.io/v1" => status_reply(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    let kube = Kube::new(client, workspace_config());
    let err = kube.snapshot_workspace("s-1", "x").await.unwrap_err();
    assert!(matches!(err, SandboxError::Unsupported { .. }), "{err}");
    // Remembered: a second try asks nothing.
    assert!(kube.snapshot_workspace("s-1", "y").await.is_err());
    kube.delete_workspace_snapshot("x").await.unwrap();
    assert_eq!(mock.lines(), ["GET /apis/snapshot.storage.k8s.io/v1"]);
}

#[tokio::test]
async fn a_fork_clones_the_source_claim_at_its_class_and_the_larger_size() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, CLAIMS) => (StatusCode::OK, claim_list(vec![claim("lap-work-s-1", "s-1")])),
        (Method::POST, CLAIMS) => created(seen),
        _ => panic!("unexpected {}", seen.line()),
    });
    let kept = Kube::new(client, workspace_config())
        .copy_workspace(lap::sandbox::WorkspaceSource::Session("s-1"), "s-2")
        .await
        .unwrap();
    assert_eq!(kept.location, "kube://lap/persistentvolumeclaims/lap-work-s-2");
    let clone = mock.request(1).body;
    assert_eq!(
        clone["spec"]["dataSource"],
        json!({"kind": "PersistentVolumeClaim", "name": "lap-work-s-1"})
    );
    assert_eq!(clone["spec"]["storageClassName"], "gold");
    assert_eq!(
        clone["spec"]["resources"]["requests"]["storage"], "8Gi",
        "the source is larger than --kube-workspace-size"
    );
}

#[tokio::test]
async fn deleting_a_workspace_deletes_every_claim_of_the_session_and_gone_is_fine() {
    let (client, mock) = Mock::start(|seen| match (seen.method.clone(), seen.path.as_str()) {
        (Method::GET, CLAIMS) => (StatusCode::OK, claim_list(vec![claim("lap-work-s-1", "s-1")])),
        (Method::DELETE, _) => status_reply(
            StatusCode::NOT_FOUND,
            "NotFound",
            "persistentvolumeclaims \"lap-work-s-1\" not found",
        ),
        _ => panic!("unexpected {}", seen.line()),
    });
    Kube::new(client, workspace_config())
        .delete_workspace("s-1")
        .await
        .unwrap();
    assert_eq!(
        mock.lines(),
        [
            format!("GET {CLAIMS}?{CLAIM_SELECTOR},lap.dev/session=s-1"),
            format!("DELETE {CLAIMS}/lap-work-s-1"),
        ]
    );
}
