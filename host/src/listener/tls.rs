//! TLS termination: certificates chosen by SNI, reloadable without dropping connections.
//!
//! Each TLS listener owns a [`CertResolver`] whose certificate set sits behind an `ArcSwap`.
//! A reload reads every file again and swaps the whole set at once; a handshake in progress
//! keeps the set it loaded, and established connections never look at it again. A reload that
//! fails anywhere changes nothing.

use crate::config::{CertificateConfig, ListenerTls};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate could not be loaded; names the config key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {problem}")]
pub struct TlsError {
    pub key: String,
    pub path: String,
    pub problem: String,
}

/// The certificates of one listener, indexed by server name.
#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    fn load(cfg: &ListenerTls) -> Result<CertSet, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for (i, c) in cfg.certificates.iter().enumerate() {
            let (key, names) = load_pair(c)?;
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| key.clone()),
                    None => exact.entry(name).or_insert_with(|| key.clone()),
                };
            }
            if i == cfg.default_certificate {
                default = Some(key);
            }
        }
        let default = default.expect("validated: default_certificate < certificates.len()");
        Ok(CertSet {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni {
            // rustls hands us SNI already lower-cased and validated as a DNS name.
            if let Some(k) = self.exact.get(name) {
                return k.clone();
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return k.clone();
                }
            }
        }
        self.default.clone()
    }
}

fn load_pair(c: &CertificateConfig) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let err = |path: &Path, field: &str, problem: String| TlsError {
        key: format!("{}.{field}", c.key_path),
        path: path.display().to_string(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err(&c.cert, "cert", pem_problem(e)))?;
    if chain.is_empty() {
        return Err(err(&c.cert, "cert", "no CERTIFICATE block found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&c.key).map_err(|e| err(&c.key, "key", pem_problem(e)))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| err(&c.key, "key", format!("unsupported private key: {e}")))?;
    let names = if c.server_names.is_empty() {
        let names = certificate_names(&chain[0]).map_err(|p| err(&c.cert, "cert", p))?;
        if names.is_empty() {
            return Err(err(
                &c.cert,
                "cert",
                "certificate has no DNS names; set server_names".into(),
            ));
        }
        names
    } else {
        c.server_names.clone()
    };
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        err(
            &c.key,
            "key",
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok((Arc::new(certified), names))
}

fn pem_problem(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind found".into()
        }
        other => format!("invalid PEM: {other:?}"),
    }
}

/// DNS names from the subjectAltName extension, falling back to the subject CN.
fn certificate_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|e| format!("invalid certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// rustls certificate resolver for one listener; swappable as a whole.
#[derive(Debug)]
pub struct CertResolver {
    config: ListenerTls,
    current: ArcSwap<CertSet>,
}

impl CertResolver {
    pub fn new(config: ListenerTls) -> Result<CertResolver, TlsError> {
        let set = CertSet::load(&config)?;
        Ok(CertResolver {
            config,
            current: ArcSwap::from_pointee(set),
        })
    }

    /// Re-reads the files; on error the current set stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let set = CertSet::load(&self.config)?;
        self.current.store(Arc::new(set));
        Ok(())
    }

    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.config
            .certificates
            .iter()
            .flat_map(|c| [&c.cert, &c.key])
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()))
    }
}

/// rustls server config: TLS 1.2 and 1.3 only, ALPN h2 then http/1.1, session tickets on.
pub fn server_config(
    resolver: Arc<CertResolver>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}
