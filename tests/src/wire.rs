//! A SIP peer's socket in the rig: UDP, or one TCP or TLS stream with
//! message framing. Reads time out; nothing here blocks without a bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::netns::Netns;

/// A stream connection: plain TCP, or TLS as either side.
pub enum Stream {
    Plain(TcpStream),
    TlsServer(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    TlsClient(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP connection under the stream.
    #[must_use]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::TlsServer(s) => s.get_ref(),
            Self::TlsClient(s) => s.get_ref(),
        }
    }

    fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::TlsServer(s) => s.read(buf),
            Self::TlsClient(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::TlsServer(s) => s.write(buf),
            Self::TlsClient(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::TlsServer(s) => s.flush(),
            Self::TlsClient(s) => s.flush(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration that trusts the CA of `ca_file` (PEM) only.
#[must_use]
pub fn tls_client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS server configuration presenting `cert_file` with `key_file`.
#[must_use]
pub fn tls_server_config(cert_file: &Path, key_file: &Path) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(key_file).expect("key file");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("certificate and key"),
    )
}

pub enum Wire {
    Udp {
        sock: UdpSocket,
        /// Where [`Wire::send`] goes: the far end, or the last sender.
        peer: Option<SocketAddr>,
    },
    Tcp {
        stream: Stream,
        peer: SocketAddr,
        buf: Vec<u8>,
    },
}

impl Wire {
    /// A UDP socket bound to `local` inside `ns`, sending to `peer`.
    #[must_use]
    pub fn udp(ns: &Netns, local: SocketAddr, peer: Option<SocketAddr>) -> Self {
        let sock = ns.enter(|| UdpSocket::bind(local).expect("bind UDP"));
        Self::Udp { sock, peer }
    }

    /// A TCP connection from inside `ns` to `peer`.
    #[must_use]
    pub fn connect(ns: &Netns, peer: SocketAddr) -> Self {
        let stream = ns.enter(|| {
            TcpStream::connect_timeout(&peer, Duration::from_secs(2)).expect("TCP connect")
        });
        let _ = stream.set_nodelay(true);
        Self::Tcp {
            stream: Stream::Plain(stream),
            peer,
            buf: Vec::new(),
        }
    }

    /// A TLS connection from inside `ns` to `peer`, verifying its
    /// certificate for `name` against `config`'s roots; the handshake is
    /// done before this returns. `Err` when it fails.
    pub fn connect_tls(
        ns: &Netns,
        peer: SocketAddr,
        name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = ns.enter(|| TcpStream::connect_timeout(&peer, Duration::from_secs(2)))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Self::Tcp {
            stream: Stream::TlsClient(Box::new(tls)),
            peer,
            buf: Vec::new(),
        })
    }

    /// The first TLS connection to `listener` within `within`, its
    /// handshake done with `config`.
    #[must_use]
    pub fn accept_tls(
        listener: &TcpListener,
        within: Duration,
        config: Arc<rustls::ServerConfig>,
    ) -> Option<Self> {
        let Self::Tcp { stream, peer, .. } = Self::accept(listener, within)? else {
            return None;
        };
        let Stream::Plain(tcp) = stream else {
            return None;
        };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let conn = rustls::ServerConnection::new(config).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).ok()?;
        }
        Some(Self::Tcp {
            stream: Stream::TlsServer(Box::new(tls)),
            peer,
            buf: Vec::new(),
        })
    }

    /// The first connection to `listener`, waiting up to `within`.
    #[must_use]
    pub fn accept(listener: &TcpListener, within: Duration) -> Option<Self> {
        listener.set_nonblocking(true).ok()?;
        let deadline = Instant::now() + within;
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false).ok()?;
                    let _ = stream.set_nodelay(true);
                    return Some(Self::Tcp {
                        stream: Stream::Plain(stream),
                        peer,
                        buf: Vec::new(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return None,
            }
        }
    }

    #[must_use]
    pub fn local(&self) -> SocketAddr {
        match self {
            Self::Udp { sock, .. } => sock.local_addr().expect("local address"),
            Self::Tcp { stream, .. } => stream.tcp().local_addr().expect("local address"),
        }
    }

    /// A stream (TCP or TLS), not UDP.
    #[must_use]
    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Tcp { .. })
    }

    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tcp { stream, .. } if stream.is_tls())
    }

    /// `UDP`, `TCP` or `TLS`, for Via.
    #[must_use]
    pub fn via(&self) -> &'static str {
        match self {
            Self::Udp { .. } => "UDP",
            Self::Tcp { stream, .. } if stream.is_tls() => "TLS",
            Self::Tcp { .. } => "TCP",
        }
    }

    /// What a Contact URI names to come back over this wire.
    #[must_use]
    pub fn uri_param(&self) -> &'static str {
        match self.via() {
            "TLS" => ";transport=tls",
            "TCP" => ";transport=tcp",
            _ => "",
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        match self {
            Self::Udp { sock, peer } => {
                if let Some(p) = peer {
                    let _ = sock.send_to(bytes, *p);
                }
            }
            Self::Tcp { stream, .. } => {
                let _ = stream.write_all(bytes);
                let _ = stream.flush();
            }
        }
    }

    /// Sends to `dst` over UDP (a response to whoever sent the request);
    /// over TCP, on the stream.
    pub fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        match self {
            Self::Udp { sock, .. } => {
                let _ = sock.send_to(bytes, dst);
            }
            Self::Tcp { stream, .. } => {
                let _ = stream.write_all(bytes);
                let _ = stream.flush();
            }
        }
    }

    /// The next whole message and who sent it, or `None` after `timeout`
    /// (or when the stream closed).
    pub fn recv(&mut self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        match self {
            Self::Udp { sock, peer } => {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    sock.set_read_timeout(Some(left)).ok()?;
                    match sock.recv_from(&mut buf) {
                        Ok((n, src)) => {
                            *peer = Some(src);
                            return Some((buf[..n].to_vec(), src));
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        // An ICMP error of an earlier send: read on.
                        Err(_) => {}
                    }
                }
            }
            Self::Tcp { stream, peer, buf } => loop {
                if let Ok(Some(n)) = sipauth_sip::frame(buf) {
                    return Some((buf.drain(..n).collect(), *peer));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                stream.tcp().set_read_timeout(Some(left)).ok()?;
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return None,
                }
            },
        }
    }
}

/// A random token for tags, branches and Call-IDs.
#[must_use]
pub fn token() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}
