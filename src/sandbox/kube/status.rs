//! What a Pod's status means for its sandbox, as pure functions: ready, still coming up, or failed
//! with a reason a person can act on (image pull failures, crash loops, evictions, OOM kills).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Where a sandbox's Pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Scheduled or starting; `what` says where it is, for logs.
    Pending { what: String },
    /// Every container runs and is ready.
    Ready,
    /// It will not become (or stay) usable: the session is `failed` (or `dead` once it was ready).
    Failed { reason: String },
    /// It is gone or being deleted.
    Gone,
}

/// What to do about an image the nodes cannot pull.
pub const PULL_ADVICE: &str = "check `lap serve --kube-image` and that the nodes can pull it (on kind, `scripts/kind-up.sh` loads it); \
     see docs/troubleshooting.md#kube-image-pull";

/// Waiting reasons that will not resolve by themselves.
const FATAL_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The state of `pod`.
pub fn pod_state(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Gone;
    }
    let Some(status) = &pod.status else {
        return PodState::Pending {
            what: "not scheduled yet".into(),
        };
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if status.reason.as_deref() == Some("Evicted") {
        let detail = status.message.as_deref().unwrap_or("the node ran short of resources");
        return PodState::Failed {
            reason: format!("the sandbox pod was evicted: {detail}"),
        };
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some(reason) = container_failure(container) {
            return PodState::Failed { reason };
        }
    }
    match phase {
        "Failed" => PodState::Failed {
            reason: format!(
                "the sandbox pod failed: {}",
                status
                    .message
                    .as_deref()
                    .or(status.reason.as_deref())
                    .unwrap_or("no reason given")
            ),
        },
        "Succeeded" => PodState::Failed {
            reason: "the sandbox pod exited".into(),
        },
        "Running" => {
            let statuses = status.container_statuses.as_deref().unwrap_or_default();
            if !statuses.is_empty() && statuses.iter().all(|c| c.ready) {
                PodState::Ready
            } else {
                PodState::Pending {
                    what: "containers starting".into(),
                }
            }
        }
        _ => {
            let unschedulable = status.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            });
            match unschedulable {
                Some(c) => PodState::Pending {
                    what: format!("unschedulable: {}", c.message.as_deref().unwrap_or("no node fits")),
                },
                None => PodState::Pending {
                    what: phase.to_lowercase(),
                },
            }
        }
    }
}

/// Why one container makes its sandbox unusable, if it does.
pub fn container_failure(container: &ContainerStatus) -> Option<String> {
    let name = &container.name;
    let state = container.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if FATAL_WAITING.contains(&reason) {
            let detail = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            return Some(match reason {
                "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                    format!("cannot pull the image of container `{name}` ({reason}){detail}; {PULL_ADVICE}")
                }
                "CrashLoopBackOff" => {
                    let last = last_exit(container).unwrap_or_default();
                    format!("container `{name}` keeps crashing (CrashLoopBackOff){last}")
                }
                _ => format!("container `{name}` cannot start ({reason}){detail}"),
            });
        }
    }
    let terminated = state
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| container.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    match terminated.reason.as_deref() {
        Some("OOMKilled") => Some(format!(
            "container `{name}` ran out of memory (OOMKilled); raise the agent's memory limit"
        )),
        // An init container that finished is the normal case.
        Some("Completed") if terminated.exit_code == 0 => None,
        _ if terminated.exit_code != 0 => Some(format!(
            "container `{name}` exited with code {}{}",
            terminated.exit_code,
            terminated
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        _ => None,
    }
}

fn last_exit(container: &ContainerStatus) -> Option<String> {
    let last = container.last_state.as_ref()?.terminated.as_ref()?;
    Some(format!(
        "; last exit code {}{}",
        last.exit_code,
        last.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "lap-1"}, "status": status})).unwrap()
    }

    fn failed(status: serde_json::Value) -> String {
        match pod_state(&pod(status)) {
            PodState::Failed { reason } => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_running_pod_with_every_container_ready_is_ready() {
        let state = pod_state(&pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "harness", "ready": true, "restartCount": 0, "image": "i", "imageID": ""},
            {"name": "vault", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]})));
        assert_eq!(state, PodState::Ready);
    }

    #[test]
    fn a_running_pod_with_a_container_not_ready_is_pending() {
        let state = pod_state(&pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "vault", "ready": false, "restartCount": 0, "image": "i", "imageID": ""}]})));
        assert!(matches!(state, PodState::Pending { .. }));
    }

    #[test]
    fn image_pull_back_off_names_the_container_and_the_registry_message() {
        let reason = failed(
            json!({"phase": "Pending", "containerStatuses": [{"name": "harness", "ready": false,
            "restartCount": 0, "image": "lap-sandbox:dev", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"lap-sandbox:dev\""}}}]}),
        );
        assert_eq!(
            reason,
            format!(
                "cannot pull the image of container `harness` (ImagePullBackOff): Back-off pulling image \"lap-sandbox:dev\"; {PULL_ADVICE}"
            )
        );
    }

    #[test]
    fn a_crash_loop_reports_the_last_exit() {
        let reason = failed(
            json!({"phase": "Running", "containerStatuses": [{"name": "vault", "ready": false,
            "restartCount": 4, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}),
        );
        assert_eq!(
            reason,
            "container `vault` keeps crashing (CrashLoopBackOff); last exit code 2 (Error)"
        );
    }

    #[test]
    fn an_eviction_says_why_the_node_evicted() {
        let reason = failed(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            reason,
            "the sandbox pod was evicted: The node was low on resource: memory."
        );
    }

    #[test]
    fn an_oom_kill_suggests_raising_the_memory_limit() {
        let reason = failed(
            json!({"phase": "Running", "containerStatuses": [{"name": "harness", "ready": false,
            "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(
            reason,
            "container `harness` ran out of memory (OOMKilled); raise the agent's memory limit"
        );
    }

    #[test]
    fn a_completed_init_container_is_not_a_failure() {
        let state = pod_state(&pod(json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "egress-fence", "ready": true, "restartCount": 0, "image": "i",
                "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})));
        assert!(matches!(state, PodState::Pending { .. }));
    }

    #[test]
    fn a_failing_egress_fence_fails_the_sandbox() {
        let reason = failed(json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "egress-fence", "ready": false, "restartCount": 0, "image": "i",
                "imageID": "", "state": {"terminated": {"exitCode": 3, "reason": "Error",
                "message": "ip6tables: not found"}}}]}));
        assert_eq!(
            reason,
            "container `egress-fence` exited with code 3: ip6tables: not found"
        );
    }

    #[test]
    fn an_unschedulable_pod_is_pending_with_the_scheduler_message() {
        let state = pod_state(&pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]})));
        assert_eq!(
            state,
            PodState::Pending {
                what: "unschedulable: 0/1 nodes are available: 1 Insufficient memory.".into()
            }
        );
    }
}
