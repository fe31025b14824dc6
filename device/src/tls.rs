//! Mutual TLS with the box's own certificate, shared by the MQTT connection (mqtt.rs) and
//! the IoT credentials provider client (credentials.rs): one way to read the PEM files and
//! one set of error messages, each naming the config key of the file that is wrong.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// rustls's process-wide crypto provider: ring, as the functions use (one TLS stack, one
/// provider in the binary). Called before any TLS configuration is built; idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration that trusts the CA certificates in `ca` and presents the chain in
/// `cert` with the private key in `key` (all PEM). `section` prefixes the key names in
/// errors (`mqtt` gives `mqtt.ca /etc/sensorbox/AmazonRootCA1.pem: ...`), so a person knows
/// which line of the config to fix.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    section: &str,
) -> Result<rustls::ClientConfig, String> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca_error = |e: &dyn std::fmt::Display| format!("{section}.ca {}: {e}", ca.display());
    let cas = CertificateDer::pem_file_iter(ca).map_err(|e| ca_error(&e))?;
    for certificate in cas {
        let certificate = certificate.map_err(|e| ca_error(&e))?;
        roots.add(certificate).map_err(|e| ca_error(&e))?;
    }
    if roots.is_empty() {
        return Err(ca_error(&"no certificate in the file"));
    }
    let cert_error = |e: &dyn std::fmt::Display| format!("{section}.cert {}: {e}", cert.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(&e))?;
    if chain.is_empty() {
        return Err(cert_error(&"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{section}.key {}: {e}", key.display()))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{section}.cert/{section}.key do not make a client identity: {e}"))
}
