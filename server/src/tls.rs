//! TLS for `wss://` and `https://` without a proxy: rustls (through
//! tokio-rustls, with the `ring` provider: no OpenSSL), a certificate chain
//! and key from PEM files, TLS 1.2 and 1.3, ALPN `http/1.1`.
//!
//! The server's TLS configuration sits behind an `ArcSwap`: a reload reads
//! the files again and new handshakes take the new certificate, so a renewed
//! certificate needs no restart. Handshakes in progress keep the one they
//! started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum LoadTlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("tls.cert {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file cannot be read or holds no PEM private key.
    #[error("tls.key {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refuses them.
    #[error("tls.cert {} and tls.key {} do not make a usable pair: {reason}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// Reads a certificate chain and its key into a rustls server configuration.
/// Blocking file I/O.
///
/// # Errors
/// A file is missing, unreadable or holds no PEM item of its kind, or the key
/// does not match the certificate.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, LoadTlsError> {
    let certificate_error = |reason: String| LoadTlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| certificate_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| certificate_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate_error(
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| LoadTlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| LoadTlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's current TLS configuration.
#[derive(Debug)]
pub struct Tls {
    config: ArcSwap<ServerConfig>,
}

impl Tls {
    /// TLS with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Tls {
            config: ArcSwap::new(config),
        }
    }

    /// An acceptor for one new connection, with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// Puts a new certificate in place for the handshakes that start from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }
}
