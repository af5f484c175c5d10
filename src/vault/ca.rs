//! The vault's certificate authority and its cache of per-host leaf certificates.
//!
//! The CA (ECDSA P-256, `O=lap`, basicConstraints CA:TRUE pathlen 0, KeyUsage keyCertSign, cRLSign,
//! digitalSignature) is generated once and kept as `ca.pem` (0644) and `ca.key` (0600). It is always
//! loaded back from its PEM, so a leaf's issuer field is the CA subject's exact DER bytes — GnuTLS
//! (git and apt on Debian) compares them byte for byte.
//!
//! A CA can also be made for one holder alone ([`generate_pem`]): the Kubernetes backend gives each
//! sandbox pod its own (`O=lap`, `CN=lap egress vault CA for <pod>`, the same constraints), so no pod
//! holds a key that any other sandbox trusts.
//!
//! Leaves are minted on demand, one per host: SAN (DNS name, or IP address for a literal), KeyUsage
//! digitalSignature, EKU serverAuth, an authority key identifier, a random serial (NSS rejects two
//! leaves with the same issuer and serial), valid from an hour ago for [`LEAF_VALIDITY`]. They are
//! cached and re-minted after [`LEAF_REFRESH`], well before they expire. Concurrent requests for one
//! host wait on that host's slot and mint once; different hosts mint in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a leaf certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// When a cached leaf is replaced by a fresh one.
pub const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Most leaves cached at once; past it the cache starts over.
pub const MAX_CACHED_LEAVES: usize = 10_000;
/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start being valid this long before they are minted, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot use the vault CA file `{}`", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vault CA in `{}` is not usable: {message}", dir.display())]
    Invalid { dir: PathBuf, message: String },
    #[error("cannot make the vault CA `{name}`: {message}")]
    Generate { name: String, message: String },
    #[error("cannot mint a certificate for `{host}`: {message}")]
    Mint { host: String, message: String },
}

/// A minted leaf, ready for rustls, and when to replace it.
struct Leaf {
    key: Arc<CertifiedKey>,
    refresh_at: Instant,
}

/// One host's cache slot; its lock is held while the leaf is minted.
type Slot = Arc<Mutex<Option<Leaf>>>;

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    leaves: Mutex<HashMap<String, Slot>>,
    minted: AtomicUsize,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + use<> {
    let path = path.to_owned();
    move |source| CaError::File { path, source }
}

/// A CA's certificate and private key, PEM.
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: crate::secret::Secret,
}

/// A new CA named `common_name`, held in memory only (the caller decides where its key goes).
pub fn generate_pem(common_name: &str) -> Result<CaPem, CaError> {
    let (cert_pem, key_pem) = generate(common_name).map_err(|message| CaError::Generate {
        name: common_name.to_owned(),
        message,
    })?;
    Ok(CaPem {
        cert_pem,
        key_pem: crate::secret::Secret::new(key_pem),
    })
}

/// What a sandbox trusts: `system_roots` (PEM, possibly empty) followed by `ca_cert_pem`.
pub fn trust_bundle(system_roots: &str, ca_cert_pem: &str) -> String {
    let separator = if system_roots.is_empty() || system_roots.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let mut bundle = format!("{system_roots}{separator}{ca_cert_pem}");
    if !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, generating it (key mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if !cert_path.exists() || !key_path.exists() {
            let (cert_pem, key_pem) = generate(LOCAL_CA_NAME).map_err(|message| CaError::Invalid {
                dir: dir.to_owned(),
                message,
            })?;
            std::fs::create_dir_all(dir).map_err(file_error(dir))?;
            crate::settings::write_private_file(&key_path, key_pem.as_bytes()).map_err(file_error(&key_path))?;
            std::fs::write(&cert_path, cert_pem).map_err(file_error(&cert_path))?;
        }
        Self::load(dir)
    }

    /// A new CA (named as `lap serve`'s) held in this process only: nothing is written, and its key
    /// is gone with the process. For a `lap serve` whose vault signs for no sandbox (Kubernetes in
    /// sidecar mode: each pod's vault has a CA of its own).
    pub fn ephemeral() -> Result<Self, CaError> {
        let generated = |message| CaError::Generate {
            name: LOCAL_CA_NAME.to_owned(),
            message,
        };
        let (cert_pem, key_pem) = generate(LOCAL_CA_NAME).map_err(generated)?;
        Self::from_pem(&cert_pem, &key_pem).map_err(generated)
    }

    /// Loads the CA kept in `dir` (`ca.pem`, `ca.key`); never makes one.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(file_error(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(file_error(&key_path))?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|message| CaError::Invalid {
            dir: dir.to_owned(),
            message,
        })
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("bad key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| format!("bad certificate: {e}"))?;
        let cert_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("bad certificate PEM: {e}"))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            leaves: Mutex::new(HashMap::new()),
            minted: AtomicUsize::new(0),
        })
    }

    /// The CA certificate, PEM, ending in a newline (safe to concatenate into a bundle).
    pub fn cert_pem(&self) -> String {
        let mut pem = self.cert_pem.clone();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem
    }

    /// How many leaves this CA has minted (cache misses).
    pub fn minted(&self) -> usize {
        self.minted.load(Ordering::Relaxed)
    }

    /// The leaf for `host` (a DNS name or an IP literal), from the cache or freshly minted.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let slot = {
            let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if leaves.len() >= MAX_CACHED_LEAVES && !leaves.contains_key(&host) {
                // A sandbox naming endless distinct hosts must not grow this without bound: start
                // over (a later request for a dropped host mints again, which is cheap).
                leaves.clear();
            }
            leaves.entry(host.clone()).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leaf) = slot.as_ref().filter(|leaf| leaf.refresh_at > Instant::now()) {
            return Ok(leaf.key.clone());
        }
        let key = Arc::new(self.mint(&host)?);
        *slot = Some(Leaf {
            key: key.clone(),
            refresh_at: Instant::now() + LEAF_REFRESH,
        });
        Ok(key)
    }

    fn mint(&self, host: &str) -> Result<CertifiedKey, CaError> {
        let fail = |message: String| CaError::Mint {
            host: host.to_owned(),
            message,
        };
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(|e| fail(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().map_err(fail)?);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| fail(e.to_string()))?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| fail(e.to_string()))?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing,
        ))
    }
}

/// The common name of the CA `lap serve` keeps in its data dir.
const LOCAL_CA_NAME: &str = "lap egress vault CA";

/// A new CA named `common_name`: (certificate PEM, private key PEM).
fn generate(common_name: &str) -> Result<(String, String), String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lap");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// 16 random bytes with the top bit clear, so the DER integer stays positive.
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_owned())?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn ca() -> (tempfile::TempDir, CertificateAuthority) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        (dir, ca)
    }

    fn leaf_der(ca: &CertificateAuthority, host: &str) -> Vec<u8> {
        ca.leaf(host).unwrap().cert[0].to_vec()
    }

    #[test]
    fn leaf_issuer_is_the_ca_subject_byte_for_byte() {
        let (dir, ca) = ca();
        let leaf = leaf_der(&ca, "api.github.com");
        let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der.as_ref()).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
        // Reloaded from disk, the CA still issues matching leaves.
        let reloaded = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let again = leaf_der(&reloaded, "api.github.com");
        let (_, again) = X509Certificate::from_der(&again).unwrap();
        assert_eq!(again.issuer().as_raw(), ca_cert.subject().as_raw());
    }

    #[test]
    fn ca_is_a_constrained_signing_authority() {
        let (_dir, ca) = ca();
        let (_, cert) = X509Certificate::from_der(ca.cert_der.as_ref()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0));
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    }

    #[test]
    fn leaves_carry_san_usage_and_short_validity() {
        let (_dir, ca) = ca();
        let der = leaf_der(&ca, "Example.TEST.");
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, vec![GeneralName::DNSName("example.test")]);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
        assert!(has_aki(&cert));
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime as u64, (LEAF_VALIDITY + BACKDATE).as_secs());
    }

    fn has_aki(cert: &X509Certificate<'_>) -> bool {
        cert.extensions()
            .iter()
            .any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
    }

    #[test]
    fn ip_literals_get_an_ip_san() {
        let (_dir, ca) = ca();
        let der = leaf_der(&ca, "127.0.0.1");
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, vec![GeneralName::IPAddress(&[127, 0, 0, 1])]);
    }

    #[test]
    fn every_leaf_has_its_own_serial() {
        let (_dir, ca) = ca();
        let a = leaf_der(&ca, "a.test");
        let b = leaf_der(&ca, "b.test");
        let serial = |der: &[u8]| X509Certificate::from_der(der).unwrap().1.raw_serial().to_vec();
        assert_ne!(serial(&a), serial(&b));
    }

    #[test]
    fn concurrent_requests_for_one_host_mint_once() {
        let (_dir, ca) = ca();
        let ca = Arc::new(ca);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let ca = ca.clone();
                std::thread::spawn(move || ca.leaf("same.test").unwrap())
            })
            .collect();
        let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(ca.minted(), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
        ca.leaf("other.test").unwrap();
        assert_eq!(ca.minted(), 2);
    }

    #[test]
    fn the_cache_does_not_grow_past_its_bound() {
        let (_dir, ca) = ca();
        for n in 0..MAX_CACHED_LEAVES + 10 {
            ca.leaves.lock().unwrap().entry(format!("h{n}.test")).or_default();
        }
        ca.leaf("fresh.test").unwrap();
        assert!(ca.leaves.lock().unwrap().len() <= MAX_CACHED_LEAVES);
    }

    #[test]
    fn a_ca_made_for_one_holder_is_its_own_and_loads_as_the_sidecar_loads_it() {
        let one = generate_pem("lap egress vault CA for lap-one").unwrap();
        let two = generate_pem("lap egress vault CA for lap-two").unwrap();
        assert_ne!(one.key_pem.expose(), two.key_pem.expose());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &one.cert_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), one.key_pem.expose()).unwrap();
        let ca = CertificateAuthority::load(dir.path()).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.cert_der.as_ref()).unwrap();
        assert_eq!(cert.subject().to_string(), "O=lap, CN=lap egress vault CA for lap-one");
        assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
        let leaf = leaf_der(&ca, "api.github.com");
        let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
        assert_eq!(leaf.issuer().as_raw(), cert.subject().as_raw());
    }

    #[test]
    fn loading_never_makes_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let err = CertificateAuthority::load(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::File { .. }), "{err}");
        assert!(!dir.path().join("ca.key").exists());
    }

    #[test]
    fn a_trust_bundle_is_the_roots_then_the_ca_each_on_lines_of_their_own() {
        let ca = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
        assert_eq!(trust_bundle("", ca), ca);
        assert_eq!(trust_bundle("ROOTS\n", ca), format!("ROOTS\n{ca}"));
        assert_eq!(trust_bundle("ROOTS", ca), format!("ROOTS\n{ca}"));
        assert_eq!(trust_bundle("ROOTS", ca.trim_end()), format!("ROOTS\n{ca}"));
    }

    #[test]
    fn the_private_key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _ca) = ca();
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(_ca.cert_pem().ends_with("-----END CERTIFICATE-----\n"));
    }
}
