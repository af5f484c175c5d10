//! Bring-up: from a `creating` session to a `ready` one, and the sandbox's environment.
//!
//! [`Control::create_session`] records the session and starts [`Control::bring_up`], which writes
//! fresh stubs, gets a sandbox (a warm one claimed from the pool, or a new one, on the session's
//! workspace when it has one), attaches its vault, clones the agent's repository, starts the agent
//! and writes `ready` — a conditional update: a session deleted meanwhile is not resurrected, the
//! sandbox just made is discarded instead. A bring-up that fails records the [`BringUpError`] as the
//! session's failure reason (its `Display` is written for the person reading `lap sessions show`),
//! after discarding what it made. The warm pool makes its sandboxes with the same steps
//! ([`Control::clone_repo`], [`sandbox_env`]). Real credential values never reach the sandbox: its
//! environment carries stubs only.

use std::collections::BTreeMap;
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use super::{Control, ControlError, End, git, phase};
use crate::sandbox::{
    AGENT_HOME, AgentStart, CA_BUNDLE_PATH, ExecChunk, ExecSpec, HomeFile, PROXY_ADDR, SandboxError, SandboxSpec,
};
use crate::store::warm::WarmRow;
use crate::store::{SessionRow, SessionUpdate, StoreError};
use crate::tools::first_run::{self, FirstRun};
use crate::wire::api::{Agent, SessionStatus};

/// Why a bring-up (or the making of a warm sandbox) failed; its `Display` is the failure reason a
/// person reads.
#[derive(Debug, thiserror::Error)]
pub enum BringUpError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// The backend could not make the sandbox.
    #[error("{0}")]
    Create(SandboxError),
    /// The backend that keeps workspaces could not say whether this session has one.
    #[error("cannot find the session's workspace: {0}")]
    FindWorkspace(SandboxError),
    /// A claimed warm sandbox's `/work` could not become the session's workspace.
    #[error("cannot keep the sandbox's workspace: {0}")]
    KeepWorkspace(SandboxError),
    /// The agent's volumes cannot be mounted here (`control/volumes.rs`).
    #[error("{0}")]
    Volumes(Box<ControlError>),
    #[error("cannot start the vault for this sandbox: {0}")]
    Vault(SandboxError),
    /// A warm sandbox's vault, for the clone of its agent's repository.
    #[error("cannot start the vault for the clone: {0}")]
    CloneVault(SandboxError),
    /// `git clone` ran and failed; `message` is the end of its stderr, on one line.
    #[error("git clone of `{url}` (branch `{branch}`) failed with exit code {code}: {message}")]
    Clone {
        url: String,
        branch: String,
        code: i32,
        message: String,
    },
    #[error("cannot run git clone in the sandbox: {0}")]
    CloneExec(SandboxError),
    #[error("cannot start the agent in its sandbox: {0}")]
    StartAgent(SandboxError),
    /// A warm sandbox's row was deleted while it was being made.
    #[error("its row went away")]
    WarmRowGone,
}

/// How a bring-up gets its sandbox.
pub(super) enum Claim {
    /// Ask the warm pool first (when it is on).
    Untried,
    /// The warm pool was asked already: this sandbox, or none.
    Tried(Option<Box<WarmRow>>),
}

/// Where the agent's repository is cloned, inside the sandbox.
pub const REPO_DIR: &str = "/work/repo";
/// A git credential helper reading the token from the sandbox's environment — a stub, which the
/// vault swaps for the real value on the way to the bound host.
const GIT_CREDENTIAL_HELPER: &str = "credential.helper=!f() { token=${GITHUB_TOKEN:-${GH_TOKEN:-$GIT_TOKEN}}; \
    test -n \"$token\" || exit 0; echo username=x-access-token; echo \"password=$token\"; }; f";
/// How much of git's stderr a failed clone keeps for the failure reason.
const CLONE_ERROR_BYTES: usize = 2048;

/// The command a TUI agent runs under its sandbox's PTY: its own `command`, else its harness's.
fn agent_command(agent: &Agent) -> Option<String> {
    let harness = crate::tools::find(&agent.harness_id).filter(|h| h.supports_tui())?;
    Some(harness.tui_command(agent.command.as_deref(), agent.model.as_deref()))
}

impl Control {
    /// Records a new `creating` session and starts its bring-up in the background. Fails at once,
    /// writing nothing, when the backend cannot create sandboxes. A session that claims a warm
    /// sandbox needing no clone is brought up before this returns, so it comes back `ready`.
    pub async fn create_session(
        self: &Arc<Self>,
        agent: &Agent,
        title: Option<String>,
    ) -> Result<SessionRow, ControlError> {
        let started = std::time::Instant::now();
        self.check_recovered()?;
        self.sandbox.check().await?;
        let first = if self.pool.enabled() {
            phase::CLAIMING_SANDBOX
        } else {
            phase::CREATING_SANDBOX
        };
        self.check_tool(agent)?;
        self.volume_mounts(agent)?;
        let row = self.new_row(agent, title, first);
        self.store.insert_session(row.clone()).await?;
        let (id, agent) = (row.id, agent.clone());
        // A store that cannot claim falls back to creating a sandbox; the session is not stranded.
        let claimed = self.claim_warm(id, &agent).await.unwrap_or_else(|err| {
            tracing::warn!(session = %id, error = %err, "cannot claim a warm sandbox");
            None
        });
        let quick = claimed
            .as_ref()
            .is_some_and(|warm| agent.repo_url.is_none() || warm.agent_id.is_some());
        let bring_up = self
            .clone()
            .bring_up(id, agent, Claim::Tried(claimed.map(Box::new)), started);
        if quick {
            bring_up.await;
        } else {
            self.tasks.spawn(bring_up);
        }
        Ok(self.store.get_session(row.id).await?.unwrap_or(row))
    }

    /// A new `creating` session row of `agent` in phase `phase`.
    pub(super) fn new_row(&self, agent: &Agent, title: Option<String>, phase: &str) -> SessionRow {
        SessionRow {
            id: Uuid::new_v4(),
            agent_id: agent.id,
            agent_name: agent.name.clone(),
            harness_id: agent.harness_id.clone(),
            status: SessionStatus::Creating,
            phase: Some(phase.to_owned()),
            phase_detail: None,
            sandbox_id: None,
            sandbox_url: None,
            tty_token: new_token(),
            harness_session_id: None,
            failure_reason: None,
            title,
            created_at: self.store.timestamp(),
            last_seen_at: String::new(),
            stopped_at: None,
            owner: None,
        }
    }

    pub(super) async fn bring_up(self: Arc<Self>, id: Uuid, agent: Agent, claim: Claim, started: std::time::Instant) {
        match self.try_bring_up(id, &agent, claim, started).await {
            Ok(()) => {
                self.metrics.bring_up(started.elapsed());
                if let Ok(Some(row)) = self.store.get_session(id).await
                    && row.status == SessionStatus::Ready
                    && let Some(sandbox) = row.sandbox_id
                {
                    self.watch_agent(id, sandbox);
                }
            }
            Err(reason) => {
                if let Err(err) = self.end(id, End::Failed(reason.to_string())).await {
                    tracing::error!(session = %id, error = %err, "cannot record a failed bring-up");
                }
            }
        }
    }

    /// Ends the session when its agent exits, whether a viewer is attached or not.
    pub(super) fn watch_agent(self: &Arc<Self>, id: Uuid, sandbox: String) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let code = tokio::select! {
                _ = this.shutdown.cancelled() => return,
                code = this.sandbox.wait_agent(&sandbox) => code,
            };
            // A sandbox that went for a hibernation (or a restart) is not an agent that exited.
            let still_there = matches!(
                this.store.get_session(id).await,
                Ok(Some(row)) if row.sandbox_id.as_deref() == Some(sandbox.as_str())
            );
            match code {
                Ok(_) if !still_there => {}
                Ok(code) => {
                    let reason = format!("the agent exited with code {code}");
                    if let Err(err) = this.end_session(id, reason).await {
                        tracing::warn!(session = %id, error = %err, "cannot end the session of an exited agent");
                    }
                }
                // No agent to watch (an API harness, a backend without terminals) or the sandbox
                // went away: nothing to do.
                Err(err) => tracing::debug!(session = %id, error = %err, "not watching the agent"),
            }
        });
    }

    /// Stubs, sandbox (warm or new), vault, repo, agent, `ready`. An error is the failure reason a
    /// person can act on.
    async fn try_bring_up(
        &self,
        id: Uuid,
        agent: &Agent,
        claim: Claim,
        started: std::time::Instant,
    ) -> Result<(), BringUpError> {
        let phase = |name: &str| self.store.update_session(id, SessionUpdate::Phase(name.to_owned()));
        let credentials = self.store.agent_credentials(agent.id).await?;
        let stubs: Vec<(String, String)> = credentials
            .iter()
            .map(|c| (c.name.clone(), crate::vault::new_stub(&c.name)))
            .collect();
        self.store.set_session_stubs(id, stubs.clone()).await?;
        let bound: Vec<(String, Vec<String>)> = credentials.iter().map(|c| (c.name.clone(), c.hosts.clone())).collect();
        let env = sandbox_env(&agent.env, &stubs, &bound);
        // A workspace that exists already (a restart, a resume from hibernation, a fork) is mounted
        // into a new sandbox; a warm sandbox has a `/work` of its own, which becomes the workspace.
        let (workspace, resumed) = self.workspace_at_bring_up(id).await?;
        let native = match resumed {
            true => self.store.get_session(id).await?.and_then(|row| row.harness_session_id),
            false => None,
        };
        let claimed = match claim {
            Claim::Tried(claimed) => claimed.map(|row| *row),
            Claim::Untried if resumed => None,
            Claim::Untried => {
                if self.pool.enabled() {
                    phase(phase::CLAIMING_SANDBOX).await?;
                }
                self.claim_warm(id, agent).await?
            }
        };
        let (sandbox_id, sandbox_url, cloned, warm) = match &claimed {
            Some(WarmRow {
                sandbox_id: Some(sandbox_id),
                sandbox_url,
                agent_id,
                ..
            }) => (
                sandbox_id.clone(),
                sandbox_url.clone().unwrap_or_default(),
                agent_id.is_some(),
                true,
            ),
            _ => {
                if self.pool.enabled() {
                    phase(phase::CREATING_SANDBOX).await?;
                }
                let spec = SandboxSpec {
                    harness_id: agent.harness_id.clone(),
                    session_id: Some(id.to_string()),
                    env: env.clone(),
                    ca_bundle: self.ca_bundle.clone(),
                    command: None,
                    limits: (&agent.limits).into(),
                    workspace: workspace.clone(),
                    volumes: self
                        .volume_mounts(agent)
                        .map_err(|e| BringUpError::Volumes(Box::new(e)))?,
                };
                let info = self.sandbox.create(&spec).await.map_err(BringUpError::Create)?;
                (info.id, info.url, false, false)
            }
        };
        let bound = async {
            if warm {
                self.keep_warm_workspace(id, &sandbox_id, workspace.as_deref()).await?;
            }
            let cloned = cloned || (resumed && self.repo_in_workspace(&sandbox_id, workspace.as_deref()).await);
            phase(phase::BINDING_CREDENTIALS).await?;
            self.attach_vault(id, Some(id), &sandbox_id, agent, credentials, &stubs)
                .await
                .map_err(BringUpError::Vault)?;
            if let Some(url) = &agent.repo_url
                && !cloned
            {
                phase(phase::CLONING_REPO).await?;
                self.clone_repo(&sandbox_id, url, &agent.branch, env.clone()).await?;
            }
            phase(phase::STARTING_HARNESS).await?;
            self.start_agent(&sandbox_id, agent, env.clone()).await?;
            let ready = SessionUpdate::Ready {
                sandbox_id: sandbox_id.clone(),
                sandbox_url: sandbox_url.clone(),
                // The tool's transcripts are in the workspace: its conversation resumes.
                harness_session_id: native.clone(),
            };
            Ok::<_, BringUpError>(self.store.update_session(id, ready).await?)
        };
        match bound.await {
            Ok(Some(updated)) if updated.applied => {
                if let Some(warm) = &claimed {
                    self.claimed_in(id, agent, warm, started.elapsed());
                }
                Ok(())
            }
            // It failed, or the session was deleted (or restarted) while the sandbox was being made:
            // the sandbox never became the session's, so it is discarded here, not by `end`.
            other => {
                self.detach_vault(id);
                self.delete_sandbox(&sandbox_id).await;
                other.map(|_| ())
            }
        }
    }

    /// Starts the agent of a session in its sandbox (late binding): the session's environment, the
    /// agent's command (none for an API harness: the environment only) in `/work/repo` when the
    /// agent has a repository. The one place the control plane starts an agent.
    async fn start_agent(&self, sandbox: &str, agent: &Agent, env: Vec<(String, String)>) -> Result<(), BringUpError> {
        let harness = crate::tools::find(&agent.harness_id);
        // The tool's own needs first, so the agent's `env` can override them.
        let env: Vec<(String, String)> = harness
            .into_iter()
            .flat_map(|h| h.env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .chain(env)
            .collect();
        let cwd = agent.repo_url.as_ref().map(|_| REPO_DIR.to_owned());
        let first_run = harness.map_or(FirstRun::None, |h| h.first_run);
        let home_files = first_run::files(
            first_run,
            &env,
            cwd.as_deref().unwrap_or(AGENT_HOME),
            AGENT_HOME,
            agent.model.as_deref(),
        )
        .into_iter()
        .map(|f| HomeFile {
            path: f.path.to_owned(),
            contents: f.contents,
        })
        .collect();
        let start = AgentStart {
            env,
            command: agent_command(agent),
            cwd,
            home_files,
        };
        self.sandbox
            .start_agent(sandbox, start)
            .await
            .map_err(BringUpError::StartAgent)
    }

    /// Clones `url` (`branch`, depth 1) into [`REPO_DIR`] inside the sandbox, as its user, through its
    /// vault, with `env` over the sandbox's environment. A failure is git's own message.
    pub(super) async fn clone_repo(
        &self,
        sandbox: &str,
        url: &str,
        branch: &str,
        env: Vec<(String, String)>,
    ) -> Result<(), BringUpError> {
        let argv = [
            "git",
            "-c",
            GIT_CREDENTIAL_HELPER,
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            branch,
            "--",
            url,
            REPO_DIR,
        ];
        let spec = ExecSpec {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cwd: None,
            stdin: Vec::new(),
            env,
        };
        let (output, mut chunks) = tokio::sync::mpsc::channel(64);
        let collect = async {
            let mut stderr = Vec::new();
            while let Some(chunk) = chunks.recv().await {
                if let ExecChunk::Stderr(data) = chunk {
                    stderr.extend_from_slice(&data);
                    let excess = stderr.len().saturating_sub(CLONE_ERROR_BYTES);
                    stderr.drain(..excess);
                }
            }
            stderr
        };
        let (code, stderr) = tokio::join!(self.sandbox.exec(sandbox, spec, output), collect);
        match code {
            Ok(0) => Ok(()),
            Ok(code) => Err(BringUpError::Clone {
                url: url.to_owned(),
                branch: branch.to_owned(),
                code,
                message: String::from_utf8_lossy(&stderr).trim().replace('\n', "; "),
            }),
            Err(err) => Err(BringUpError::CloneExec(err)),
        }
    }
}

/// A sandbox's environment: the agent's plain variables, then the proxy and CA variables every
/// tool needs to go through the vault, the git configuration that sends every `bound` host's git
/// remotes (SSH ones too) over HTTPS with the stub ([`git`]; `bound` is each credential's name and
/// hosts), then one stub per credential (never a real value).
pub fn sandbox_env(
    plain: &BTreeMap<String, String>,
    stubs: &[(String, String)],
    bound: &[(String, Vec<String>)],
) -> Vec<(String, String)> {
    let proxy = format!("http://{PROXY_ADDR}");
    let mut env = plain.clone();
    for name in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        env.insert(name.to_owned(), proxy.clone());
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.insert(name.to_owned(), "localhost,127.0.0.1".to_owned());
    }
    env.insert("NODE_USE_ENV_PROXY".to_owned(), "1".to_owned());
    for name in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "CODEX_CA_CERTIFICATE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "CARGO_HTTP_CAINFO",
        "AWS_CA_BUNDLE",
    ] {
        env.insert(name.to_owned(), CA_BUNDLE_PATH.to_owned());
    }
    env.extend(git::config_env(bound));
    for (name, stub) in stubs {
        env.insert(name.clone(), stub.clone());
    }
    env.into_iter().collect()
}

/// A fresh per-session TTY token: 32 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bring_up_error_reads_as_the_failure_reason_a_person_acts_on() {
        let gone = || SandboxError::NotFound("sb-1".into());
        let clone = BringUpError::Clone {
            url: "https://github.com/o/r.git".into(),
            branch: "main".into(),
            code: 128,
            message: "fatal: repository not found".into(),
        };
        assert_eq!(
            clone.to_string(),
            "git clone of `https://github.com/o/r.git` (branch `main`) failed with exit code 128: fatal: repository not found"
        );
        assert_eq!(
            BringUpError::Create(gone()).to_string(),
            "sandbox `sb-1` does not exist"
        );
        assert_eq!(
            BringUpError::Vault(gone()).to_string(),
            "cannot start the vault for this sandbox: sandbox `sb-1` does not exist"
        );
        assert_eq!(
            BringUpError::StartAgent(gone()).to_string(),
            "cannot start the agent in its sandbox: sandbox `sb-1` does not exist"
        );
        assert_eq!(BringUpError::WarmRowGone.to_string(), "its row went away");
    }

    #[test]
    fn the_sandbox_environment_carries_stubs_proxy_and_ca_but_never_lets_the_agent_unset_them() {
        let plain = BTreeMap::from([
            ("EDITOR".to_owned(), "vim".to_owned()),
            ("HTTPS_PROXY".to_owned(), "http://elsewhere:1".to_owned()),
        ]);
        let stubs = vec![(
            "GITHUB_TOKEN".to_owned(),
            "stub_github_token_0011223344556677".to_owned(),
        )];
        let bound = vec![("GITHUB_TOKEN".to_owned(), vec!["github.com".to_owned()])];
        let env: BTreeMap<String, String> = sandbox_env(&plain, &stubs, &bound).into_iter().collect();
        assert_eq!(env["EDITOR"], "vim");
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["https_proxy"], "http://127.0.0.1:3128");
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1");
        assert_eq!(env["SSL_CERT_FILE"], CA_BUNDLE_PATH);
        assert_eq!(env["NODE_EXTRA_CA_CERTS"], CA_BUNDLE_PATH);
        assert_eq!(env["GITHUB_TOKEN"], "stub_github_token_0011223344556677");
        assert_eq!(env["GIT_CONFIG_KEY_0"], "url.https://github.com/.insteadOf");
        assert_eq!(env["GIT_CONFIG_VALUE_0"], "git@github.com:");
    }

    #[test]
    fn a_tui_agent_runs_its_harness_with_the_model_flag_and_its_own_command_as_given() {
        let agent = |harness: &str, command: Option<&str>, model: Option<&str>| -> Agent {
            serde_json::from_value(serde_json::json!({
                "id": uuid::Uuid::nil(), "name": "a", "harness_id": harness, "supports_tui": true,
                "command": command, "repo_url": null, "branch": "main", "prompt": null, "model": model,
                "env": {}, "credentials": [], "env_var_hosts": {}, "allow_out": [], "deny_out": [],
                "created_at": "", "updated_at": ""
            }))
            .unwrap()
        };
        assert_eq!(
            agent_command(&agent("gemini", None, Some("gemini-2.5-pro"))).as_deref(),
            Some("gemini --model 'gemini-2.5-pro'")
        );
        assert_eq!(
            agent_command(&agent("hermes", None, Some("it's"))).as_deref(),
            Some("hermes --tui --model 'it'\\''s'")
        );
        assert_eq!(agent_command(&agent("gemini", None, None)).as_deref(), Some("gemini"));
        assert_eq!(
            agent_command(&agent("shell", None, Some("m"))).as_deref(),
            Some("bash -l")
        );
        assert_eq!(
            agent_command(&agent("gemini", Some("my-gemini"), Some("m"))).as_deref(),
            Some("my-gemini")
        );
        assert_eq!(agent_command(&agent("opencode", None, Some("m"))), None);
    }
}
