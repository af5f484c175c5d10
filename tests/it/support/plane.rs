//! The in-process control plane the tests share, built as `lap serve`'s composition root builds
//! it: [`lap::control::Services::new`] with what a test changes, and a vault whose CA lives in the
//! test's directory.

use std::path::Path;
use std::sync::Arc;

use lap::control::{Control, Services};
use lap::sandbox::Sandbox;
use lap::store::Store;
use lap::vault::ca::CertificateAuthority;
use lap::vault::intercept::Vault;

/// A vault with its CA made under `dir` (`dir/vault`), resolving every host as the system does and
/// trusting the system's roots.
pub fn vault(dir: &Path) -> Arc<Vault> {
    let ca = CertificateAuthority::load_or_create(&dir.join("vault")).expect("the vault's CA");
    Arc::new(Vault::new(Arc::new(ca), Vec::new(), Vec::new()).expect("the vault"))
}

/// `lap serve`'s control plane over `store` and `sandbox`, its vault's CA under `dir`; `change`
/// sets what the test needs (a warm pool, an idle time, a task tracker it waits on).
pub fn control(
    dir: &Path,
    store: &Store,
    sandbox: Arc<dyn Sandbox>,
    change: impl FnOnce(Services) -> Services,
) -> Arc<Control> {
    Control::new(change(Services::new(store.clone(), sandbox, vault(dir))))
}
