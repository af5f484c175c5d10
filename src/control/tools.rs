//! Session creation refuses a harness whose tool the sandboxes would not find, on a backend whose
//! sandboxes use the host's tools ([`crate::sandbox::Sandbox::uses_host_tools`]: the local one).

use super::{Control, ControlError};
use crate::wire::api::Agent;

impl Control {
    /// Fails when the agent runs its harness's own tool, the backend's sandboxes use the host's
    /// tools, and the tool is not installed there (an agent with its own `command` is trusted to know what it runs).
    pub(super) fn check_tool(&self, agent: &Agent) -> Result<(), ControlError> {
        if !self.sandbox.uses_host_tools() || agent.command.as_deref().is_some_and(|c| !c.trim().is_empty()) {
            return Ok(());
        }
        let Some(harness) = crate::tools::find(&agent.harness_id) else {
            return Ok(());
        };
        match crate::tools::installed::missing(harness) {
            Some((message, hint)) => Err(ControlError::ToolMissing { message, hint }),
            None => Ok(()),
        }
    }
}
