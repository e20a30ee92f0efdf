//! TLS to the next hop (`relay.tls`): a verifying connector (system roots plus `relay.ca_file`)
//! for `required`, an encryption-only one for `opportunistic` (RFC 7435; see `client.rs`), none
//! for `off`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::error::RelayError;
use crate::config::NextHopTls;

/// The TLS connector for `relay.tls`: verifying (system roots plus `ca_file`) for `required`,
/// encryption-only for `opportunistic`, none for `off`.
pub fn tls_connector(
    mode: NextHopTls,
    ca_file: Option<&Path>,
) -> Result<Option<TlsConnector>, RelayError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::TlsConfig(e.to_string()))?;
    let config = match mode {
        NextHopTls::Off => return Ok(None),
        NextHopTls::Opportunistic => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        NextHopTls::Required => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, "system root certificates for the next hop");
            if let Some(ca) = ca_file {
                let certs = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| RelayError::TlsConfig(format!("{}: {e}", ca.display())))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| RelayError::TlsConfig(format!("{}: {e}", ca.display())))?;
                if certs.is_empty() {
                    return Err(RelayError::TlsConfig(format!(
                        "{}: no certificate",
                        ca.display()
                    )));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| RelayError::TlsConfig(format!("{}: {e}", ca.display())))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted to whoever holds the presented key (opportunistic TLS).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
