//! `lap` runs coding agents in isolated sandboxes where the agent never holds a real credential.
//!
//! This library is the whole product; `main.rs` only parses arguments and calls [`cli::run`].
//! The module map follows DESIGN §3: `cli` is the client and the composition root of `lap serve`,
//! `api` the HTTP surface, `control` the services behind it, `store` the only owner of SQL,
//! `sandbox` the backends, `wire` the contracts shared by both ends of every connection.

pub mod api;
pub mod cli;
pub mod client;
pub mod control;
pub mod drivers;
pub mod error;
#[cfg(all(target_os = "linux", not(lap_portable)))]
pub mod harness;
pub mod mcp;
pub mod metrics;
pub mod output;
pub mod platform;
pub mod sandbox;
pub mod secret;
pub mod settings;
pub mod store;
pub mod term;
pub mod tools;
pub mod vault;
pub mod wire;
