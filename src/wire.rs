//! The wire contracts, each defined once and imported by both peers.
//!
//! `api` is the REST JSON shapes (`admin` the admin stats) shared by `lap serve` and the CLI client; `messages` the message
//! API's messages, events and stream frames; `tty` the terminal WebSocket's frames, control
//! messages and limits; `harness` the protocol between `lap serve` and the harness in each sandbox;
//! `vault` the credential data model (injection points, request rules, presets) and the binding a
//! vault is handed; `teams` users and API keys. This module depends on nothing else of ours but [`crate::secret::Secret`] (the
//! binding's real values), so either side can change internals without touching the contract.

pub mod admin;
pub mod api;
pub mod files;
pub mod harness;
pub mod messages;
// Issue 17 part 1 (ports): listening ports and preview URLs.
pub mod ports;
// Issue 19 part 1: users and API keys with roles.
pub mod teams;
pub mod tty;
pub mod vault;
