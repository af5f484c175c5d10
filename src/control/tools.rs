//! Session creation refuses a harness whose tool the local backend's sandboxes would not find.

use super::{Control, ControlError};
use crate::wire::api::Agent;

impl Control {
    /// Fails when the agent runs its harness's own tool on the local backend and the tool is not
    /// installed (an agent with its own `command` is trusted to know what it runs).
    pub(super) fn check_tool(&self, agent: &Agent) -> Result<(), ControlError> {
        if self.sandbox.name() != "local" || agent.command.as_deref().is_some_and(|c| !c.trim().is_empty()) {
            return Ok(());
        }
        let Some(harness) = crate::harness::find(&agent.harness_id) else {
            return Ok(());
        };
        match crate::harness::tools::missing(harness) {
            Some((message, hint)) => Err(ControlError::ToolMissing { message, hint }),
            None => Ok(()),
        }
    }
}
