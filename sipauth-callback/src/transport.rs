//! The HTTP/1.1 transport of callbacks: hyper's connection API over
//! kept-alive connections, pooled per origin.
//!
//! A call costs two callbacks (answer_url, hangup_url), mostly to the same
//! few hosts, so a connection is used for many calls: after a response has
//! been read to its end, the connection goes back to its origin's pool
//! (at most [`IDLE_PER_ORIGIN`] wait there, none longer than
//! [`IDLE_TIMEOUT`]). A request that a pooled connection could not send —
//! the server had closed it meanwhile — goes again on a new connection;
//! one that was sent is never sent twice from here.
//!
//! HTTPS verifies the server's certificate against the web PKI roots and
//! any roots the operator adds, for the URL's host (also the SNI). Host
//! names are resolved by the system resolver, addresses tried in order.
//! No proxy, no redirects, no HTTP/2.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept per origin at most; more are closed.
pub const IDLE_PER_ORIGIN: usize = 64;
/// An idle connection unused this long is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Sender = SendRequest<Full<Bytes>>;

/// Where a request connects: scheme, host and port of its URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub tls: bool,
    pub host: Host,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Origin {
    /// The origin of an `http`/`https` URL; `None` for any other or
    /// without a host.
    pub fn of(url: &url::Url) -> Option<Self> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Ipv4(a) => Host::Ip(a.into()),
            url::Host::Ipv6(a) => Host::Ip(a.into()),
            url::Host::Domain(d) => Host::Name(d.to_owned()),
        };
        let port = url.port_or_known_default()?;
        Some(Self { tls, host, port })
    }
}

/// Why a request got no response: resolution, TCP or the TLS handshake
/// failed, or the connection did while the request or the response was
/// under way.
#[derive(Debug)]
pub struct SendError(pub String);

/// A response's status and, when asked for, its body.
pub struct Reply {
    pub status: u16,
    pub body: Option<Result<Vec<u8>, BodyError>>,
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Read(String),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Kept-alive connections by origin, and the TLS settings new ones use.
pub struct Pool {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    tls: Arc<rustls::ClientConfig>,
}

impl Pool {
    /// A pool whose HTTPS connections trust the web PKI roots and the
    /// certificates of `extra_roots_pem`.
    pub fn new(extra_roots_pem: &[Vec<u8>]) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for pem in extra_roots_pem {
            let mut any = false;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("root certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("root certificate: {e}"))?;
                any = true;
            }
            if !any {
                return Err("root certificate: no certificate in the PEM".to_owned());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            idle: Mutex::new(HashMap::new()),
            tls: Arc::new(config),
        })
    }

    /// Sends `request` (origin-form target, Host set) to `origin` and reads
    /// the response: its body too, up to `body_limit` bytes, when
    /// `read_body`. The caller bounds the time this takes.
    pub async fn exchange(
        &self,
        origin: &Origin,
        mut request: hyper::Request<Full<Bytes>>,
        read_body: bool,
        body_limit: usize,
    ) -> Result<Reply, SendError> {
        let (sender, response) = loop {
            let Some(mut sender) = self.take(origin) else {
                let mut sender = self.connect(origin).await?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| SendError(chain(&e)))?;
                break (sender, response);
            };
            match sender.try_send_request(request).await {
                Ok(response) => break (sender, response),
                // Never written: the connection had closed. Again, on
                // another.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError(chain(e.error()))),
                },
            }
        };
        let status = response.status().as_u16();
        let too_long = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > body_limit as u64);
        if too_long {
            // Not read: the connection cannot be used again.
            return Ok(Reply {
                status,
                body: read_body.then_some(Err(BodyError::TooLarge)),
            });
        }
        let body = match Limited::new(response.into_body(), body_limit)
            .collect()
            .await
        {
            Ok(b) => Ok(b.to_bytes().into()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
            Err(e) => Err(BodyError::Read(chain(&*e))),
        };
        // Back to the pool at once: the connection task marks it ready
        // when it has finished the exchange, and [`Pool::take`] passes
        // over it until then. Waiting here would hold the caller's answer
        // for two more turns of the scheduler.
        if body.is_ok() {
            self.put(origin, sender);
        }
        Ok(Reply {
            status,
            body: read_body.then_some(body),
        })
    }

    /// The newest idle connection to `origin` that can take a request now.
    /// Those expired or closed are dropped; one still finishing its last
    /// exchange stays for a later request.
    fn take(&self, origin: &Origin) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("callback pool");
        let list = idle.get_mut(origin)?;
        let now = Instant::now();
        list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && !c.sender.is_closed());
        let newest_ready = list.iter().rposition(|c| c.sender.is_ready())?;
        Some(list.remove(newest_ready).sender)
    }

    fn put(&self, origin: &Origin, sender: Sender) {
        let mut idle = self.idle.lock().expect("callback pool");
        let list = idle.entry(origin.clone()).or_default();
        // The oldest are the likeliest to have been closed by the server.
        let now = Instant::now();
        list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && !c.sender.is_closed());
        if list.len() < IDLE_PER_ORIGIN {
            list.push(Idle { sender, since: now });
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, SendError> {
        let tcp = match &origin.host {
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, origin.port)).await,
            Host::Name(name) => connect_name(name, origin.port).await,
        }
        .map_err(|e| SendError(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if origin.tls {
            let name = match &origin.host {
                Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                Host::Name(n) => {
                    ServerName::try_from(n.clone()).map_err(|e| SendError(format!("{n}: {e}")))?
                }
            };
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| SendError(format!("TLS handshake: {}", chain(&e))))?;
            handshake(TokioIo::new(stream)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

/// Each address of `name` in turn, until one takes the connection.
async fn connect_name(name: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((name, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{name} has no address"),
        )
    }))
}

/// HTTP/1.1 over `io`; the connection runs in a task of its own until
/// either side closes it.
async fn handshake<T>(io: T) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| SendError(chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %chain(&e), "callback connection ended");
        }
    });
    Ok(sender)
}

/// An error with its sources, `a: b: c`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// An HTTP/1.1 server on loopback answering every request `ok`; with
    /// `close_after_reply` it closes each connection after its first
    /// answer without saying so, as a server whose idle timeout has run
    /// out does. Counts the connections it accepted.
    async fn server(close_after_reply: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: its head, then Content-Length bytes.
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + len {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + len);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() || close_after_reply {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn post(addr: SocketAddr) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post("/cb")
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::from_static(b"a=1")))
            .unwrap()
    }

    fn origin(addr: SocketAddr) -> Origin {
        Origin {
            tls: false,
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    #[tokio::test]
    async fn one_connection_carries_request_after_request() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(&[]).unwrap();
        for _ in 0..5 {
            let reply = pool
                .exchange(&origin(addr), post(addr), true, 1024)
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body.unwrap().unwrap(), b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_without_losing_the_request() {
        let (addr, accepted) = server(true).await;
        let pool = Pool::new(&[]).unwrap();
        for i in 1..=3 {
            let reply = pool
                .exchange(&origin(addr), post(addr), false, 1024)
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            assert!(reply.body.is_none(), "not asked for");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }

    #[test]
    fn origins_of_urls() {
        let o = |u: &str| Origin::of(&url::Url::parse(u).unwrap());
        assert_eq!(
            o("https://[2001:db8::1]/a"),
            Some(Origin {
                tls: true,
                host: Host::Ip("2001:db8::1".parse().unwrap()),
                port: 443
            })
        );
        assert_eq!(
            o("http://Callbacks.Example:8080/a?b=c"),
            Some(Origin {
                tls: false,
                host: Host::Name("callbacks.example".to_owned()),
                port: 8080
            })
        );
        assert_eq!(o("ftp://127.0.0.1/x"), None);
    }

    #[test]
    fn roots_must_hold_a_certificate() {
        assert!(Pool::new(&[b"not a certificate".to_vec()]).is_err());
    }
}
