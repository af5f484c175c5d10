//! What runs inside a sandbox to serve its agent: the harness. Linux only.
//!
//! A sandbox's PID 1 (`lap harness`, [`crate::sandbox::local`]'s `init`) builds the sandbox and
//! starts the harness server (the local backend's `server`, speaking [`crate::wire::harness`] on
//! `harness.sock`), which runs the agent's tool; a TUI tool runs under the [`terminal`] here, its
//! PTY shared by every viewer. Which tool, and how it is set up, is the catalog's ([`crate::tools`]);
//! how an API tool is spoken to is its driver's, in the control plane ([`crate::drivers`]).

pub mod terminal;
