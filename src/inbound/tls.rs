//! Server-side TLS for STARTTLS and implicit-TLS listeners: rustls (aws-lc-rs), TLS 1.2 and 1.3
//! only, certificate chain and private key from PEM files (`[server.tls]`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert: {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("server.tls.key: {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("server.tls: {0}")]
    Config(String),
}

/// Build the acceptor from PEM files. Called at start and on reload, so that a renewed
/// certificate is picked up by new sessions.
pub fn load_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            reason: "no CERTIFICATE in PEM file".into(),
        });
    }
    // The key error text of rustls-pki-types never includes key material.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    acceptor_from_der(certs, key)
}

/// Build the acceptor from DER objects (tests generate them with rcgen).
pub fn acceptor_from_der(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, TlsError> {
    crate::install_crypto_provider();
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
