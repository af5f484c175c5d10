//! The vault: the egress proxy that swaps stubs for real credentials on the wire.
//!
//! This build has two of its parts: the certificate authority ([`ca`]) that intercepted TLS is served
//! under, with its per-host leaf certificates, and the stub↔real substitution ([`rewrite`]) with host
//! binding. The proxy, policy and audit parts are built on top of them by the vault issue. The CA's private key lives only in the data dir of
//! `lap serve` (mode 0600) and is never mounted into a sandbox; only its certificate is.

pub mod ca;
pub mod rewrite;
