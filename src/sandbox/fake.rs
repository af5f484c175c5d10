//! An in-memory sandbox backend for tests: sandboxes are map entries, created instantly.
//!
//! It is a real implementation of the trait, not a mock: state changes the way a backend's would, and
//! a restart of `lap serve` forgets every sandbox, as if the machine had rebooted. Its egress listener
//! is a TCP socket on the host's loopback, so tests can play the sandbox and send traffic through the
//! vault ([`Fake::proxy_addr`]), with the environment the sandbox was given ([`Fake::env`]) — at
//! creation, then replaced by [`Sandbox::start_agent`] as a real harness does ([`Fake::agent`] tells
//! what was started). Tests select it with the hidden `lap serve --backend fake`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AgentStart, ProxyListener, Sandbox, SandboxError, SandboxInfo, SandboxSpec};

#[derive(Default)]
pub struct Fake {
    sandboxes: Mutex<BTreeMap<String, FakeSandbox>>,
}

struct FakeSandbox {
    info: SandboxInfo,
    env: Vec<(String, String)>,
    proxy: Option<SocketAddr>,
    /// The agent's command and working directory once started.
    agent: Option<(Option<String>, Option<String>)>,
}

impl Fake {
    /// The environment sandbox `id` was created with.
    pub fn env(&self, id: &str) -> Option<Vec<(String, String)>> {
        self.sandboxes.lock().unwrap().get(id).map(|s| s.env.clone())
    }

    /// The command and working directory the agent of sandbox `id` was started with, once it was.
    pub fn agent(&self, id: &str) -> Option<(Option<String>, Option<String>)> {
        self.sandboxes.lock().unwrap().get(id).and_then(|s| s.agent.clone())
    }

    /// Where sandbox `id`'s egress listener is, once the vault serves it.
    pub fn proxy_addr(&self, id: &str) -> Option<SocketAddr> {
        self.sandboxes.lock().unwrap().get(id).and_then(|s| s.proxy)
    }
}

#[async_trait]
impl Sandbox for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn check(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        let id = format!("fake-{}", uuid::Uuid::new_v4().simple());
        let info = SandboxInfo {
            url: format!("fake://{id}"),
            id: id.clone(),
            harness_id: spec.harness_id.clone(),
            session_id: spec.session_id.clone(),
        };
        let sandbox = FakeSandbox {
            info: info.clone(),
            env: spec.env.clone(),
            proxy: None,
            agent: spec.command.clone().map(|command| (Some(command), None)),
        };
        self.sandboxes.lock().unwrap().insert(id, sandbox);
        Ok(info)
    }

    async fn delete(&self, id: &str) -> Result<(), SandboxError> {
        self.sandboxes.lock().unwrap().remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        Ok(self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .map(|s| s.info.clone())
            .collect())
    }

    async fn start_agent(&self, id: &str, start: AgentStart) -> Result<(), SandboxError> {
        let mut sandboxes = self.sandboxes.lock().unwrap();
        let sandbox = sandboxes
            .get_mut(id)
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        if start.command.is_some() && sandbox.agent.is_some() {
            return Err(SandboxError::Backend(format!(
                "the agent of `{id}` has already started"
            )));
        }
        sandbox.env = start.env;
        if start.command.is_some() {
            sandbox.agent = Some((start.command, start.cwd));
        }
        Ok(())
    }

    async fn proxy_listener(&self, id: &str) -> Result<ProxyListener, SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| SandboxError::Backend(format!("cannot listen for sandbox `{id}`: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SandboxError::Backend(e.to_string()))?;
        let mut sandboxes = self.sandboxes.lock().unwrap();
        let sandbox = sandboxes
            .get_mut(id)
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        sandbox.proxy = Some(addr);
        Ok(ProxyListener::Tcp(listener))
    }

    // Issue 17 part 1 (ports): a fake sandbox runs no program, so it listens on nothing.
    async fn listening_ports(&self, id: &str) -> Result<Vec<crate::wire::ports::ListeningPort>, SandboxError> {
        if !self.sandboxes.lock().unwrap().contains_key(id) {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_sandboxes_are_listed_until_deleted() {
        let fake = Fake::default();
        let spec = SandboxSpec {
            harness_id: "shell".into(),
            session_id: Some("s1".into()),
            ..SandboxSpec::default()
        };
        let a = fake.create(&spec).await.unwrap();
        let b = fake.create(&spec).await.unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(fake.list().await.unwrap().len(), 2);
        fake.delete(&a.id).await.unwrap();
        fake.delete(&a.id).await.unwrap();
        assert_eq!(fake.list().await.unwrap(), vec![b]);
    }
}
