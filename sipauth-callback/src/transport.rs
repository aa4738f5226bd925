//! The HTTP/1.1 transport of callbacks: kept-alive connections pooled per
//! origin, each exchange run in the task that asks ([`h1`]).
//!
//! A call costs two callbacks (answer_url, hangup_url), mostly to the same
//! few hosts, so a connection is used for many calls: after a response has
//! been read to its end, the connection goes back to its origin's pool
//! (at most [`IDLE_PER_ORIGIN`] wait there, none longer than
//! [`IDLE_TIMEOUT`]). Before a pooled connection carries a request it is
//! looked at: one the server has closed meanwhile (or sent anything on) is
//! dropped and the request goes on another, so a request is never written
//! to a connection known to be gone. At most [`MAX_PER_ORIGIN`]
//! connections are open to one origin; past that a request waits for one.
//! Origins no longer called are forgotten, their idle connections closed
//! ([`SWEEP_EVERY`]).
//!
//! HTTPS verifies the server's certificate against the web PKI roots and
//! any roots the operator adds, for the URL's host (also the SNI). Host
//! names are resolved by the system resolver, addresses tried in order.
//! No proxy, no redirects, no HTTP/2.

mod h1;

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub(crate) use h1::Request;

/// Idle connections kept per origin at most.
pub const IDLE_PER_ORIGIN: usize = 64;
/// An idle connection unused this long is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections open to one origin at most, in use and idle together. A
/// server that stops answering holds this many; further requests to it
/// wait for one of them (within their timeout) instead of each opening a
/// connection of its own.
pub const MAX_PER_ORIGIN: usize = 512;
/// How often, at most, the idle connections of every origin are looked
/// at when one comes back: those past [`IDLE_TIMEOUT`] are closed, and an
/// origin with nothing left open is forgotten. Without it an origin called
/// once would keep its connections (closed by the server, in CLOSE_WAIT
/// here) and its entries for as long as the process runs.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

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

/// A connection to an origin: TCP, or TLS over it.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection can carry a request: nothing waits to be
    /// read on it, not even its end. Looks at the socket itself (one
    /// `recv` with `MSG_PEEK`): a close the runtime has not yet seen counts.
    fn is_idle_open(&self) -> bool {
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        matches!(
            socket2::SockRef::from(self.tcp()).peek(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

struct Idle {
    conn: Open,
    since: Instant,
}

impl Idle {
    /// Whether it may still be reused at `now` (idle less than
    /// [`IDLE_TIMEOUT`]).
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.since) < IDLE_TIMEOUT
    }
}

/// The idle connections by origin, and when they were last swept.
struct IdleConns {
    by_origin: HashMap<Origin, Vec<Idle>>,
    swept: Instant,
}

/// An open connection and the slot of its origin it holds until closed.
struct Open {
    stream: Stream,
    slot: OwnedSemaphorePermit,
}

/// Kept-alive connections by origin, and the TLS settings new ones use.
pub struct Pool {
    idle: Mutex<IdleConns>,
    /// Per origin, one permit per connection it may still open.
    slots: Mutex<HashMap<Origin, Arc<Semaphore>>>,
    max_per_origin: usize,
    tls: Arc<rustls::ClientConfig>,
}

impl Pool {
    /// A pool whose HTTPS connections trust the web PKI roots and the
    /// certificates of `extra_roots_pem`.
    pub fn new(extra_roots_pem: &[Vec<u8>]) -> Result<Self, String> {
        Self::with_max_per_origin(extra_roots_pem, MAX_PER_ORIGIN)
    }

    fn with_max_per_origin(
        extra_roots_pem: &[Vec<u8>],
        max_per_origin: usize,
    ) -> Result<Self, String> {
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
            idle: Mutex::new(IdleConns {
                by_origin: HashMap::new(),
                swept: Instant::now(),
            }),
            slots: Mutex::new(HashMap::new()),
            max_per_origin,
            tls: Arc::new(config),
        })
    }

    /// Sends `request` to `origin` and reads the response: its body too,
    /// up to `body_limit` bytes, when `read_body`. The caller bounds the
    /// time this takes; a connection dropped midway is simply closed.
    pub(crate) async fn exchange(
        &self,
        origin: &Origin,
        request: &Request<'_>,
        read_body: bool,
        body_limit: usize,
    ) -> Result<Reply, SendError> {
        let mut conn = match self.take(origin) {
            Some(conn) => conn,
            None => self.open(origin).await?,
        };
        let bytes = request.encode();
        conn.stream
            .write_all(&bytes)
            .await
            .map_err(|e| SendError(e.to_string()))?;
        // TLS holds written records until flushed; TCP has nothing to do.
        conn.stream
            .flush()
            .await
            .map_err(|e| SendError(e.to_string()))?;
        let response = h1::read_response(&mut conn.stream, read_body, body_limit)
            .await
            .map_err(|e| SendError(e.to_string()))?;
        if response.reusable {
            self.put(origin, conn);
        }
        Ok(Reply {
            status: response.status,
            body: response.body,
        })
    }

    /// The newest idle connection to `origin` still open. Those expired,
    /// closed by the server or with anything unread on them are dropped.
    fn take(&self, origin: &Origin) -> Option<Open> {
        let mut idle = self.idle.lock().expect("callback pool");
        let list = idle.by_origin.get_mut(origin)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if idle.fresh(now) && idle.conn.stream.is_idle_open() {
                return Some(idle.conn);
            }
        }
        None
    }

    fn put(&self, origin: &Origin, conn: Open) {
        if conn.slot.semaphore().available_permits() == 0 {
            // At the origin's cap a request may be waiting for a slot:
            // closing this connection gives it one.
            return;
        }
        let mut idle = self.idle.lock().expect("callback pool");
        let now = Instant::now();
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            self.sweep(&mut idle, now);
        }
        let list = idle.by_origin.entry(origin.clone()).or_default();
        // The oldest are the likeliest to have been closed by the server.
        list.retain(|c| c.fresh(now));
        if list.len() < IDLE_PER_ORIGIN {
            list.push(Idle { conn, since: now });
        }
    }

    /// Closes the idle connections past [`IDLE_TIMEOUT`] of every origin
    /// and forgets the origins with none left; then the slot counters of
    /// origins with no connection open, or being opened (only this map
    /// holds their semaphore: every connection, and every request waiting
    /// for a slot, holds it too, and a request takes it under the lock).
    fn sweep(&self, idle: &mut IdleConns, now: Instant) {
        idle.swept = now;
        idle.by_origin.retain(|_, list| {
            list.retain(|c| c.fresh(now));
            !list.is_empty()
        });
        self.slots
            .lock()
            .expect("callback slots")
            .retain(|_, slots| Arc::strong_count(slots) > 1);
    }

    /// A new connection to `origin`, once the origin has a slot for one.
    async fn open(&self, origin: &Origin) -> Result<Open, SendError> {
        let slots = self
            .slots
            .lock()
            .expect("callback slots")
            .entry(origin.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_origin)))
            .clone();
        let slot = slots
            .acquire_owned()
            .await
            .map_err(|_| SendError("the callback pool is closed".to_owned()))?;
        let stream = self.connect(origin).await?;
        Ok(Open { stream, slot })
    }

    async fn connect(&self, origin: &Origin) -> Result<Stream, SendError> {
        let tcp = match &origin.host {
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, origin.port)).await,
            Host::Name(name) => connect_name(name, origin.port).await,
        }
        .map_err(|e| SendError(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Stream::Tcp(tcp));
        }
        let name = match &origin.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => {
                ServerName::try_from(n.clone()).map_err(|e| SendError(format!("{n}: {e}")))?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| SendError(format!("TLS handshake: {}", chain(&e))))?;
        Ok(Stream::Tls(Box::new(tls)))
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

    fn post(host: &str) -> Request<'_> {
        Request {
            method: "POST",
            target: "/cb",
            host,
            headers: &[],
            body: b"a=1",
        }
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
                .exchange(&origin(addr), &post(&addr.to_string()), true, 1024)
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body.unwrap().unwrap(), b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// An origin called once and never again does not keep its idle
    /// connection, or its entries, beyond [`IDLE_TIMEOUT`] and the next
    /// sweep; an origin still in use keeps its connection.
    #[tokio::test]
    async fn an_origin_no_longer_called_is_forgotten_with_its_connections() {
        let (once, _) = server(false).await;
        let (busy, busy_accepted) = server(false).await;
        let pool = Pool::new(&[]).unwrap();
        let call = |addr: SocketAddr| {
            let pool = &pool;
            async move {
                let reply = pool
                    .exchange(&origin(addr), &post(&addr.to_string()), true, 1024)
                    .await
                    .unwrap();
                assert_eq!(reply.status, 200);
            }
        };
        call(once).await;
        call(busy).await;
        let known = |addr: SocketAddr| {
            let idle = pool
                .idle
                .lock()
                .unwrap()
                .by_origin
                .contains_key(&origin(addr));
            let slots = pool.slots.lock().unwrap().contains_key(&origin(addr));
            (idle, slots)
        };
        assert_eq!(known(once), (true, true));
        tokio::time::pause();
        for _ in 0..4 {
            tokio::time::advance(IDLE_TIMEOUT / 4).await;
            call(busy).await;
        }
        tokio::time::advance(SWEEP_EVERY).await;
        call(busy).await;
        assert_eq!(known(once), (false, false), "swept");
        assert_eq!(known(busy), (true, true));
        assert_eq!(busy_accepted.load(Ordering::SeqCst), 1, "kept in use");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_without_losing_the_request() {
        let (addr, accepted) = server(true).await;
        let pool = Pool::new(&[]).unwrap();
        for i in 1..=3 {
            let reply = pool
                .exchange(&origin(addr), &post(&addr.to_string()), false, 1024)
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            assert!(reply.body.is_none(), "not asked for");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }

    /// An origin that stops answering holds no more connections than its
    /// cap; a request past it waits for one (and here times out) instead
    /// of opening another.
    #[tokio::test]
    async fn a_silent_origin_holds_its_cap_of_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        let pool = Arc::new(Pool::with_max_per_origin(&[], 2).unwrap());
        let host = addr.to_string();
        let tries: Vec<_> = (0..3)
            .map(|_| {
                let (pool, host) = (pool.clone(), host.clone());
                tokio::spawn(async move {
                    let (to, request) = (origin(addr), post(&host));
                    let exchange = pool.exchange(&to, &request, false, 1024);
                    tokio::time::timeout(Duration::from_millis(300), exchange).await
                })
            })
            .collect();
        // Counted while all three wait, before any times out: once the
        // first two give up, their slots are free and the third may take
        // one, as it should.
        let counting = Instant::now();
        while accepted.load(Ordering::SeqCst) < 3 && counting.elapsed() < Duration::from_millis(250)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        for t in tries {
            assert!(t.await.unwrap().is_err(), "nothing answers");
        }
    }

    /// At the cap, a connection that comes back is closed so that the
    /// request waiting for a slot gets one: both requests are answered.
    #[tokio::test]
    async fn at_the_cap_a_waiting_request_gets_the_slot_of_one_done() {
        let (addr, accepted) = server(false).await;
        let pool = Arc::new(Pool::with_max_per_origin(&[], 1).unwrap());
        let host = addr.to_string();
        let both = (0..2).map(|_| {
            let (pool, host) = (pool.clone(), host.clone());
            tokio::spawn(async move {
                pool.exchange(&origin(addr), &post(&host), true, 1024)
                    .await
                    .map(|r| r.status)
            })
        });
        for t in both.collect::<Vec<_>>() {
            let status = tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("answered within 5 s")
                .unwrap();
            assert_eq!(status.unwrap(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
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
