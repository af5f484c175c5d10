//! The integration tests: one binary, a module per area (the table in DEVELOPMENT.md says what each
//! proves). [`support`] holds what they share: a test home and `lap serve` process, tmux, fake
//! upstreams and vendor APIs on loopback, the one skip-or-fail rule and the one way to wait;
//! [`kube_fake`] is the fake Kubernetes API server of the `kube_*` modules. One module's tests:
//! `cargo nextest run --test it -E 'test(/^MODULE::/)'`.

mod kube_fake;
mod support;

mod agent_volumes;
mod api;
mod claude_e2e;
mod cli;
mod codex_e2e;
mod crash;
mod files;
mod gemini_e2e;
mod generated_docs;
mod hermes_e2e;
mod keyring;
mod kube_checks;
mod kube_contract;
mod kube_e2e;
mod kube_flows;
mod kube_kubectl;
mod kube_manifests;
mod kube_serve;
mod local_sandbox;
mod mcp;
mod messages;
mod oidc;
mod openapi_schemathesis;
mod opencode_e2e;
mod pool;
mod portable;
mod ports;
mod reconciler;
mod sandbox_limits;
mod sdk_python;
mod sdk_typescript;
mod send_abort;
mod session_vault;
mod teams;
mod tty;
mod ui;
mod ui_files;
mod vault_attacks;
mod vault_ca;
mod vault_pressure;
mod vault_proxy;
mod vault_sandbox;
mod vault_sidecar;
mod workspaces;
