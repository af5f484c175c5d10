//! The vault: the egress proxy that swaps stubs for real credentials on the wire.
//!
//! Its parts: the certificate authority ([`ca`]) intercepted TLS is served under, with its per-host
//! leaf certificates; the stub↔real substitution ([`rewrite`]) with host binding; and the egress
//! policy ([`policy`]) with its guard against internal addresses. The CA's private key lives only in the data dir of
//! `lap serve` (mode 0600) and is never mounted into a sandbox; only its certificate is.

pub mod audit;
pub mod ca;
pub mod intercept;
pub mod policy;
pub mod rewrite;
