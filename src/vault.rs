//! The vault: the egress proxy that swaps stubs for real credentials on the wire.
//!
//! This build has its certificate authority ([`ca`]): the CA that intercepted TLS is served under and
//! the per-host leaf certificates minted from it. The proxy, rewriting, policy and audit parts are
//! built on top of it by the vault issue. The CA's private key lives only in the data dir of
//! `lap serve` (mode 0600) and is never mounted into a sandbox; only its certificate is.

pub mod ca;
