//! An in-memory sandbox backend for tests: sandboxes are map entries, created instantly.
//!
//! It is a real implementation of the trait, not a mock: state changes the way a backend's would, and
//! a restart of `lap serve` forgets every sandbox, as if the machine had rebooted. Tests select it with
//! the hidden `lap serve --backend fake`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Sandbox, SandboxError, SandboxInfo, SandboxSpec};

#[derive(Default)]
pub struct Fake {
    sandboxes: Mutex<BTreeMap<String, SandboxInfo>>,
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
        self.sandboxes.lock().unwrap().insert(id, info.clone());
        Ok(info)
    }

    async fn delete(&self, id: &str) -> Result<(), SandboxError> {
        self.sandboxes.lock().unwrap().remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        Ok(self.sandboxes.lock().unwrap().values().cloned().collect())
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
