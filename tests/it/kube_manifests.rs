//! Golden tests of the Kubernetes sandbox's Pod, Secret and NetworkPolicy (both vault modes), plus
//! the hardening rules they must keep, checked field by field so a golden update cannot quietly
//! loosen them; a gateway-mode pod is checked against every control of Pod Security `restricted`.
//!
//! The golden files are in `tests/golden/kube/`; `UPDATE_GOLDEN=1 cargo nextest run --test it
//! kube_manifests::` rewrites them. Review every diff of them by hand.

use std::path::PathBuf;

use lap::sandbox::LimitOverrides;
use lap::sandbox::kube::manifest::{self, PodPlan, Resources, SecretData};
use serde_json::Value;

fn plan(session: Option<&str>) -> PodPlan {
    PodPlan {
        id: "lap-0123456789abcdef".into(),
        namespace: "lap".into(),
        image: "lap-sandbox:dev".into(),
        harness_id: "claude-code".into(),
        session_id: session.map(str::to_owned),
        env: vec![
            ("GITHUB_TOKEN".into(), "stub_github_token_3fa91c0d".into()),
            ("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into()),
        ],
        limits: LimitOverrides {
            memory_bytes: Some(4 << 30),
            pids: Some(512),
            cpu_millis: Some(1500),
        },
        defaults: Resources::harness_default(),
        reach: manifest::Reach::PortForward,
        workspace_claim: None,
        vault: manifest::VaultMode::Sidecar,
    }
}

fn owner() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: "lap-0123456789abcdef".into(),
        uid: "8d2f0a4e-0000-4000-8000-000000000001".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

const REAL: &str = "ghp_real_value_never_in_the_harness";

fn secret_data() -> SecretData<'static> {
    SecretData {
        binding_json: br#"{"credentials":[{"name":"GITHUB_TOKEN","stub":"stub_github_token_3fa91c0d","value":"ghp_real_value_never_in_the_harness","hosts":["api.github.com"]}]}"#,
        ca_cert_pem: b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
        ca_key_pem: b"-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
        ca_bundle_pem: b"-----BEGIN CERTIFICATE-----\nROOTS+CA\n-----END CERTIFICATE-----\n",
        admin_token: b"0011223344556677",
        harness_token: b"8899aabbccddeeff",
    }
}

/// Compares `value` with `tests/golden/kube/<name>.json`, or rewrites it with `UPDATE_GOLDEN=1`.
fn golden(name: &str, value: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/kube/{name}.json"));
    let rendered = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    assert!(
        expected == rendered,
        "{} is stale; run with UPDATE_GOLDEN=1 and review the diff\n--- expected\n{expected}\n--- actual\n{rendered}",
        path.display()
    );
}

fn pod_json(session: Option<&str>) -> Value {
    serde_json::to_value(manifest::pod(&plan(session))).unwrap()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container `{name}` in {list}"))
}

#[test]
fn the_session_pod_matches_its_golden_file() {
    golden("pod-session", &pod_json(Some("4b1f7e9c-session")));
}

#[test]
fn the_warm_pod_matches_its_golden_file() {
    golden("pod-warm", &pod_json(None));
}

#[test]
fn the_secret_matches_its_golden_file() {
    let secret = manifest::secret(&plan(Some("4b1f7e9c-session")), Some(&owner()), &secret_data());
    golden("secret", &serde_json::to_value(secret).unwrap());
}

#[test]
fn the_network_policy_matches_its_golden_file() {
    let policy = manifest::network_policy(&plan(Some("4b1f7e9c-session")), Some(&owner()));
    golden("networkpolicy", &serde_json::to_value(policy).unwrap());
}

#[test]
fn every_long_running_container_is_locked_down() {
    let pod = pod_json(Some("s"));
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for name in ["harness", "vault"] {
        let sc = &container(&pod, "containers", name)["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_ne!(sc["runAsUser"], 0, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        assert!(sc["capabilities"].get("add").is_none(), "{name} adds capabilities");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    }
    assert_ne!(
        container(&pod, "containers", "harness")["securityContext"]["runAsUser"],
        container(&pod, "containers", "vault")["securityContext"]["runAsUser"],
        "the fence tells the vault by its UID"
    );
}

#[test]
fn the_init_container_gets_only_the_network_capabilities() {
    let pod = pod_json(Some("s"));
    let fence = container(&pod, "initContainers", "egress-fence");
    let sc = &fence["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], serde_json::json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    let script = fence["command"][2].as_str().unwrap();
    for family in ["iptables", "ip6tables"] {
        assert!(script.contains(family), "{family} missing");
    }
    assert!(script.contains(&format!("--uid-owner {}", manifest::VAULT_UID)));
    assert!(script.trim_end().ends_with("done"));
    assert!(script.contains("-j REJECT"), "the fence must end in a reject");
}

#[test]
fn only_the_vault_container_mounts_the_real_values_and_the_ca_key() {
    let pod = pod_json(Some("s"));
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let keys_of = |volume: &str| -> Vec<String> {
        let v = volumes.iter().find(|v| v["name"] == volume).unwrap();
        v["secret"]["items"]
            .as_array()
            .map(|items| items.iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let harness = container(&pod, "containers", "harness");
    for mount in harness["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let keys = keys_of(name);
        assert!(
            keys.iter()
                .all(|k| k == manifest::keys::CA_BUNDLE || k == manifest::keys::HARNESS_TOKEN),
            "the harness mounts secret keys {keys:?} through `{name}`"
        );
    }
    let vault = container(&pod, "containers", "vault");
    let vault_keys: Vec<String> = vault["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| keys_of(m["name"].as_str().unwrap()))
        .collect();
    for key in [
        manifest::keys::BINDING,
        manifest::keys::CA_KEY,
        manifest::keys::ADMIN_TOKEN,
    ] {
        assert!(vault_keys.iter().any(|k| k == key), "the vault lacks {key}");
    }
    assert!(!serde_json::to_string(&pod).unwrap().contains(REAL));
}

#[test]
fn the_agent_limits_become_requests_and_limits_of_the_harness() {
    let pod = pod_json(Some("s"));
    let resources = &container(&pod, "containers", "harness")["resources"];
    assert_eq!(resources["limits"]["memory"], (4u64 << 30).to_string());
    assert_eq!(resources["requests"]["memory"], (4u64 << 30).to_string());
    assert_eq!(resources["limits"]["cpu"], "1500m");
    assert_eq!(pod["metadata"]["annotations"][manifest::PIDS_ANNOTATION], "512");
}

#[test]
fn warm_and_claimed_pods_are_labelled_for_finding_and_adoption() {
    let warm = pod_json(None);
    let labels = &warm["metadata"]["labels"];
    assert_eq!(labels[manifest::MANAGED_BY], "lap");
    assert_eq!(labels[manifest::SANDBOX], "lap-0123456789abcdef");
    assert_eq!(labels[manifest::WARM], "true");
    assert!(labels.get(manifest::SESSION).is_none());
    let session = pod_json(Some("4b1f7e9c-session"));
    assert_eq!(session["metadata"]["labels"][manifest::WARM], "false");
    assert_eq!(session["metadata"]["labels"][manifest::SESSION], "4b1f7e9c-session");
}

#[test]
fn the_secret_and_policy_are_owned_by_the_pod() {
    let p = plan(Some("s"));
    let secret = serde_json::to_value(manifest::secret(&p, Some(&owner()), &secret_data())).unwrap();
    let policy = serde_json::to_value(manifest::network_policy(&p, Some(&owner()))).unwrap();
    for object in [&secret, &policy] {
        let reference = &object["metadata"]["ownerReferences"][0];
        assert_eq!(reference["kind"], "Pod");
        assert_eq!(reference["uid"], "8d2f0a4e-0000-4000-8000-000000000001");
        assert_eq!(object["metadata"]["labels"][manifest::SANDBOX], "lap-0123456789abcdef");
    }
}

#[test]
fn the_network_policy_blocks_private_and_metadata_addresses() {
    let policy = serde_json::to_value(manifest::network_policy(&plan(Some("s")), None)).unwrap();
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    let text = serde_json::to_string(&policy["spec"]["egress"]).unwrap();
    for cidr in [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ] {
        assert!(text.contains(cidr), "{cidr} is not excluded");
    }
}

#[test]
fn the_harness_asks_for_its_token_and_listens_on_the_pod_network_only_when_reached_by_pod_ip() {
    let command = |pod: &Value, name: &str| -> Vec<String> {
        container(pod, "containers", name)["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let after = |args: &[String], flag: &str| -> String {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[at + 1].clone()
    };
    let forwarded = pod_json(Some("s"));
    let direct = {
        let mut plan = plan(Some("s"));
        plan.reach = manifest::Reach::PodIp;
        serde_json::to_value(manifest::pod(&plan)).unwrap()
    };
    for (pod, host) in [(&forwarded, "127.0.0.1"), (&direct, "0.0.0.0")] {
        let harness = command(pod, "harness");
        assert_eq!(
            after(&harness, "--listen"),
            format!("{host}:{}", manifest::HARNESS_PORT)
        );
        assert_eq!(
            after(&harness, "--token-file"),
            format!("/var/run/lap/harness/{}", manifest::keys::HARNESS_TOKEN)
        );
        let vault = command(pod, "vault");
        assert_eq!(after(&vault, "--admin"), format!("{host}:{}", manifest::ADMIN_PORT));
        assert!(vault.iter().any(|a| a == "--admin-token-file"));
        // The proxy never leaves the pod's loopback.
        assert_eq!(after(&vault, "--listen"), format!("127.0.0.1:{}", manifest::PROXY_PORT));
    }
}

// --- workspaces: claims and snapshots ---

const SESSION: &str = "4b1f7e9c-0000-4000-8000-00000000cafe";

fn claim_json(name: &str, session: Option<&str>, source: manifest::ClaimSource<'_>, owned: bool) -> Value {
    let sandbox = session.is_none().then_some("lap-0123456789abcdef");
    let owner = owner();
    let claim = manifest::workspace_claim(
        "lap",
        name,
        manifest::claim_labels(session, sandbox),
        Some("fast-ssd"),
        "10Gi",
        source,
        owned.then_some(&owner),
    );
    serde_json::to_value(claim).unwrap()
}

#[test]
fn the_workspace_claims_match_their_golden_files() {
    let session_claim = manifest::session_claim_name(SESSION);
    golden(
        "pvc-session",
        &claim_json(&session_claim, Some(SESSION), manifest::ClaimSource::Empty, false),
    );
    golden(
        "pvc-warm",
        &claim_json(
            &manifest::warm_claim_name("lap-0123456789abcdef"),
            None,
            manifest::ClaimSource::Empty,
            true,
        ),
    );
    golden(
        "pvc-fork",
        &claim_json(
            &manifest::session_claim_name("5c2a8f0d-0000-4000-8000-00000000f0c5"),
            Some("5c2a8f0d-0000-4000-8000-00000000f0c5"),
            manifest::ClaimSource::Claim(&session_claim),
            false,
        ),
    );
    let snapshot = manifest::snapshot_name("9e3b7a10-0000-4000-8000-00000000beef");
    golden(
        "pvc-from-snapshot",
        &claim_json(
            &manifest::session_claim_name("5c2a8f0d-0000-4000-8000-00000000f0c5"),
            Some("5c2a8f0d-0000-4000-8000-00000000f0c5"),
            manifest::ClaimSource::Snapshot(&snapshot),
            false,
        ),
    );
}

#[test]
fn the_volume_snapshot_matches_its_golden_file() {
    let snapshot = manifest::volume_snapshot(
        "lap",
        "9e3b7a10-0000-4000-8000-00000000beef",
        SESSION,
        &manifest::session_claim_name(SESSION),
        Some("csi-snapclass"),
    );
    golden("volumesnapshot", &snapshot);
    // Without a class, the cluster's default snapshot class is used: the field is absent.
    let default = manifest::volume_snapshot("lap", "x", SESSION, "c", None);
    assert!(default["spec"].get("volumeSnapshotClassName").is_none(), "{default}");
}

#[test]
fn a_sessions_claim_is_owned_by_nothing_so_deleting_its_pod_keeps_it() {
    let claim = claim_json("c", Some(SESSION), manifest::ClaimSource::Empty, false);
    assert!(claim["metadata"].get("ownerReferences").is_none(), "{claim}");
    assert_eq!(claim["metadata"]["labels"][manifest::SESSION], SESSION);
    assert_eq!(claim["metadata"]["labels"][manifest::NAME], manifest::WORKSPACE_APP);
    // Not a sandbox: the pod watcher and adoption (which select `lap-sandbox`) never see it.
    assert_ne!(manifest::WORKSPACE_APP, manifest::SANDBOX_APP);
    // The adoption patch takes a warm claim's owner and warm labels away, and labels the session.
    let patch = manifest::adopt_claim_patch(SESSION);
    assert!(patch["metadata"]["ownerReferences"].is_null());
    assert_eq!(patch["metadata"]["labels"][manifest::SESSION], SESSION);
    assert_eq!(patch["metadata"]["labels"][manifest::WARM], "false");
    assert!(patch["metadata"]["labels"][manifest::SANDBOX].is_null());
}

#[test]
fn with_a_claim_the_harness_work_is_the_claim_and_only_the_harness_mounts_it() {
    let mut with_claim = plan(Some(SESSION));
    with_claim.workspace_claim = Some(manifest::session_claim_name(SESSION));
    let pod = serde_json::to_value(manifest::pod(&with_claim)).unwrap();
    let work = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "work")
        .unwrap();
    assert_eq!(
        *work,
        serde_json::json!({"name": "work", "persistentVolumeClaim": {"claimName": manifest::session_claim_name(SESSION)}})
    );
    let mounts = |name: &str| -> Vec<Value> {
        container(&pod, "containers", name)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == "work")
            .cloned()
            .collect()
    };
    assert_eq!(
        mounts("harness"),
        [serde_json::json!({"name": "work", "mountPath": "/work"})]
    );
    assert!(mounts("vault").is_empty());
    // Everything else is the pod without a claim.
    let mut without = pod.clone();
    let mut plain = pod_json(Some(SESSION));
    for p in [&mut without, &mut plain] {
        p["spec"]["volumes"][0] = Value::Null;
    }
    assert_eq!(without, plain);
}

#[test]
fn claim_and_snapshot_names_are_dns_names_whatever_the_ids() {
    for name in [
        manifest::session_claim_name(SESSION),
        manifest::warm_claim_name("lap-0123456789abcdef"),
        manifest::snapshot_name("9e3b7a10-0000-4000-8000-00000000beef"),
    ] {
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}

// ---- Gateway mode (`lap serve --kube-vault gateway`): the harness alone, Pod Security `restricted` ----

const GATEWAY_PORT: u16 = 3128;

fn gateway_plan(session: Option<&str>) -> PodPlan {
    PodPlan {
        vault: manifest::VaultMode::Gateway { port: GATEWAY_PORT },
        env: vec![
            ("GITHUB_TOKEN".into(), "stub_github_token_3fa91c0d".into()),
            (
                "HTTPS_PROXY".into(),
                "http://lap:lap-0123456789abcdef@lap-serve.lap.svc:3128".into(),
            ),
        ],
        ..plan(session)
    }
}

fn gateway_pod_json(session: Option<&str>) -> Value {
    serde_json::to_value(manifest::pod(&gateway_plan(session))).unwrap()
}

/// Pod Security Standards, `restricted` (kubernetes.io/docs/concepts/security/pod-security-standards):
/// every control the profile lists, checked on `pod`; the violations found.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let mut found = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == true {
            found.push(format!("{host} is on"));
        }
    }
    const VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = volume.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        if !kinds.iter().all(|k| VOLUMES.contains(&k.as_str())) {
            found.push(format!("volume {} is of {kinds:?}", volume["name"]));
        }
    }
    let pod_sc = &spec["securityContext"];
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().cloned().unwrap_or_default());
    for c in containers {
        let (name, sc) = (&c["name"], &c["securityContext"]);
        let or_pod = |field: &str| {
            if sc[field].is_null() {
                pod_sc[field].clone()
            } else {
                sc[field].clone()
            }
        };
        if sc["privileged"] == true {
            found.push(format!("{name} is privileged"));
        }
        if c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| !p["hostPort"].is_null())
        {
            found.push(format!("{name} has a host port"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            found.push(format!("{name} may escalate privileges"));
        }
        if or_pod("runAsNonRoot") != true {
            found.push(format!("{name} may run as root"));
        }
        if or_pod("runAsUser") == 0 {
            found.push(format!("{name} runs as UID 0"));
        }
        let seccomp = or_pod("seccompProfile")["type"].clone();
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            found.push(format!("{name} has seccomp {seccomp}"));
        }
        if !sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        {
            found.push(format!("{name} does not drop ALL capabilities"));
        }
        for added in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                found.push(format!("{name} adds {added}"));
            }
        }
        if sc.get("procMount").is_some_and(|m| m != "Default") || sc.get("seLinuxOptions").is_some() {
            found.push(format!("{name} sets procMount or SELinux options"));
        }
    }
    found
}

#[test]
fn the_gateway_pods_match_their_golden_files() {
    golden("pod-gateway-session", &gateway_pod_json(Some("4b1f7e9c-session")));
    golden("pod-gateway-warm", &gateway_pod_json(None));
    let plan = gateway_plan(Some("4b1f7e9c-session"));
    let secret = manifest::gateway_secret(
        &plan,
        Some(&owner()),
        b"-----BEGIN CERTIFICATE-----\nROOTS+LAP SERVE CA\n-----END CERTIFICATE-----\n",
        b"8899aabbccddeeff",
    );
    golden("secret-gateway", &serde_json::to_value(secret).unwrap());
    let policy = manifest::network_policy(&plan, Some(&owner()));
    golden("networkpolicy-gateway", &serde_json::to_value(policy).unwrap());
}

#[test]
fn a_gateway_pod_meets_pod_security_restricted_and_a_sidecar_pod_does_not() {
    for pod in [gateway_pod_json(Some("s")), gateway_pod_json(None)] {
        assert_eq!(restricted_violations(&pod), Vec::<String>::new(), "{pod}");
    }
    // The check can fail: the sidecar pod's fence runs as root with two capabilities.
    let sidecar = restricted_violations(&pod_json(Some("s")));
    assert!(
        sidecar.iter().any(|v| v.contains("adds \"NET_ADMIN\"")) && sidecar.iter().any(|v| v.contains("UID 0")),
        "{sidecar:?}"
    );
}

#[test]
fn a_gateway_pod_holds_only_the_harness_and_no_ca_key_binding_or_admin_token() {
    let pod = gateway_pod_json(Some("s"));
    assert!(pod["spec"].get("initContainers").is_none(), "{pod}");
    let names: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, ["harness"]);
    let harness = container(&pod, "containers", "harness");
    assert_eq!(harness["ports"].as_array().unwrap().len(), 1, "the harness port only");
    let keys: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["secret"]["items"].as_array().cloned().unwrap_or_default())
        .map(|item| item["key"].clone())
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    assert_eq!(keys, [manifest::keys::CA_BUNDLE, manifest::keys::HARNESS_TOKEN]);
    let secret = manifest::gateway_secret(&gateway_plan(Some("s")), Some(&owner()), b"BUNDLE", b"TOKEN");
    let data: Vec<String> = secret.data.unwrap().into_keys().collect();
    assert_eq!(data, [manifest::keys::CA_BUNDLE, manifest::keys::HARNESS_TOKEN]);
}

#[test]
fn a_gateway_pods_policy_lets_it_reach_only_the_gateway_port_of_lap_serve_and_the_cluster_dns() {
    let policy = serde_json::to_value(manifest::network_policy(&gateway_plan(Some("s")), Some(&owner()))).unwrap();
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "{policy}");
    assert_eq!(egress[0]["ports"][0]["port"], 53);
    assert_eq!(egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
    assert_eq!(
        egress[1],
        serde_json::json!({
            "to": [{"podSelector": {"matchLabels": {manifest::NAME: manifest::SERVE_APP}}}],
            "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
        })
    );
    assert!(
        !policy.to_string().contains("ipBlock"),
        "no address range is open: {policy}"
    );
    let ports = &policy["spec"]["ingress"][0]["ports"];
    assert_eq!(
        ports,
        &serde_json::json!([{"protocol": "TCP", "port": manifest::HARNESS_PORT}])
    );
}

#[test]
fn the_gateway_namespace_enforces_restricted_where_the_sidecar_one_must_admit_privileged() {
    let read = |name: &str| {
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kind").join(name)).unwrap()
    };
    let enforce = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("pod-security.kubernetes.io/enforce: "))
            .map(str::to_owned)
    };
    assert_eq!(enforce(&read("namespace-gateway.yaml")).as_deref(), Some("restricted"));
    assert_eq!(enforce(&read("namespace.yaml")).as_deref(), Some("privileged"));
}
