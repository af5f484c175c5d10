//! The vault: the egress proxy that swaps stubs for real credentials on the wire.
//!
//! Its parts: the certificate authority ([`ca`]) intercepted TLS is served under, with its per-host
//! leaf certificates; the stub↔real substitution ([`rewrite`]) with host binding; and the egress
//! policy ([`policy`]) with its guard against internal addresses; and the gateway ([`gateway`]) that
//! lets many Kubernetes pods share the vault of `lap serve`, each connection routed to its session's
//! binding by a proxy credential honoured only from that session's pod IP. The CA's private key
//! lives only in the data dir of `lap serve` (mode 0600) and is never mounted into a sandbox; only
//! its certificate is.

pub mod audit;
pub mod body;
pub mod ca;
pub mod decode;
pub mod encodings;
pub mod frames;
pub mod gateway;
pub mod intercept;
pub mod limits;
pub mod needles;
pub mod plan;
pub mod policy;
pub mod rewrite;
#[cfg(test)]
mod scrub_props;
pub mod tls_io;
pub mod upstream;
pub mod websocket;
pub mod wrapped;

use ring::rand::{SecureRandom, SystemRandom};

use crate::wire::vault::VaultBinding;

/// The proxy's form of a binding a vault is handed (by the control plane in-process, or read by
/// `lap vault sidecar`): the one place the wire binding becomes [`intercept::Binding`], so both
/// vaults enforce the same thing.
pub fn proxy_binding(bound: VaultBinding, audit: audit::AuditLog) -> intercept::Binding {
    let policy = policy::Policy::new(&bound.allow_out, &bound.deny_out).default_deny(bound.egress_default_deny);
    intercept::Binding::with_audit(bound.credentials, policy, audit)
}

/// A fresh stub for a credential: `stub_<name lowercased>_<16 hex digits>`, random per session.
pub fn new_stub(name: &str) -> String {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("stub_{}_{hex}", name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stubs_name_their_credential_and_never_repeat() {
        let a = super::new_stub("GITHUB_TOKEN");
        let b = super::new_stub("GITHUB_TOKEN");
        assert!(
            a.starts_with("stub_github_token_") && a.len() == "stub_github_token_".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
    }
}
