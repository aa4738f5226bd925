//! SIP over TLS (RFC 3261 26.2, RFC 5922): the certificate the edge's TLS
//! listeners present, replaced on SIGHUP without touching open
//! connections, and the client side outbound legs use to reach `sips:` and
//! `;transport=tls` targets, verifying the provider's certificate for the
//! name in the URI (RFC 5922 7.2: the host of the URI, not the address it
//! resolved to).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3.
#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// Why a certificate, key or CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{0}: no usable root certificate in the CA file")]
    NoRoots(PathBuf),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The server side: what the TLS listeners present.
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain (PEM, leaf first) and its private key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let config = Self::read(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(config),
        })
    }

    fn read(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = certificates(cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Read {
            path: key_file.to_owned(),
            source,
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            // RFC 5922 leaves client certificates to policy; callers here
            // prove who they are with the ACL and digest, as over UDP.
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }

    /// Reads the files again. New handshakes use what was read; connections
    /// already open keep theirs. On an error the previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Self::read(&self.cert_file, &self.key_file)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    /// The acceptor for one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// The client side: how outbound legs verify the servers they reach.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the certificates of `ca_file` (PEM) when given, otherwise the
    /// system's roots.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            let (added, _) = roots.add_parsable_certificates(certificates(path)?);
            if added == 0 {
                return Err(TlsError::NoRoots(path.to_owned()));
            }
        } else {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's root certificates");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates: outbound TLS will fail until tls.ca_file is set"
                );
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Runs the handshake over `tcp`, sending `host` as SNI when it is a
    /// name and verifying the server's certificate for it.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeError> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| HandshakeError::Name(host.to_owned()))?
            .to_owned();
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(HandshakeError::from_io)
    }
}

/// Why an outbound handshake failed: the certificate (its own hangup cause)
/// or anything else (the network).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0} is not a name a certificate can be checked against")]
    Name(String),
    #[error("the server's certificate was not accepted: {0}")]
    Certificate(rustls::CertificateError),
    #[error("the server's certificate was not accepted: {0}")]
    Untrusted(rustls::Error),
    #[error("TLS handshake: {0}")]
    Io(io::Error),
}

impl HandshakeError {
    fn from_io(e: io::Error) -> Self {
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned();
        match inner {
            Some(rustls::Error::InvalidCertificate(c)) => Self::Certificate(c),
            Some(
                other @ (rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)),
            ) => Self::Untrusted(other),
            _ => Self::Io(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
