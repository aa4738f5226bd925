//! SIP over UDP, TCP and TLS, IPv4 and IPv6, and the [`Replier`] that
//! carries responses back the way the request came. Stream connections are
//! taken within [`ConnLimits`] and framed by Content-Length (RFC 3261 18.3);
//! a TLS connection is the same stream once its handshake is done.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Edge;
use super::conn::{Closure, ConnLimits, Frame, Framer, Limits, Refusal, Slot};
use super::egress::Egress;
use super::tls::ServerTls;

/// The transports SIP runs over here (RFC 3261 18, 26.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The name in a Via's sent-protocol (`SIP/2.0/TLS`).
    #[must_use]
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The name in a URI's `transport=` parameter, a metric label and a
    /// callback parameter.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// What a `sip:` URI that leads back over this transport carries (UDP
    /// is the default and needs nothing).
    #[must_use]
    pub fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
            Self::Tls => ";transport=tls",
        }
    }

    /// Whether the transport retransmits by itself (RFC 3261 17: timers A,
    /// E and G run only over unreliable transports).
    #[must_use]
    pub fn is_reliable(self) -> bool {
        self != Self::Udp
    }
}

/// Where responses to one request go. Responses over UDP go to the
/// packet's source address and port (RFC 3581 behaviour, so callers behind
/// NAT are reached); over TCP, back on the connection. Every response
/// leaves through [`Replier::send`], which counts it and holds replies to
/// unproven sources to their budget ([`Egress`]).
#[derive(Clone)]
pub struct Replier {
    path: Path,
    egress: Arc<Egress>,
}

#[derive(Clone)]
enum Path {
    Udp {
        sock: Arc<UdpSocket>,
        dst: SocketAddr,
    },
    /// A stream connection's writer task (or, in tests, a receiver
    /// standing for UDP).
    Stream {
        tx: mpsc::UnboundedSender<Vec<u8>>,
        transport: Transport,
    },
}

/// The status code of a response's start line (`SIP/2.0 407 ...`); `None`
/// for a request.
fn status_code(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

impl Replier {
    #[must_use]
    pub fn udp(sock: Arc<UdpSocket>, dst: SocketAddr, egress: Arc<Egress>) -> Self {
        Self {
            path: Path::Udp { sock, dst },
            egress,
        }
    }

    /// Sends `bytes`: a response is counted, and over UDP to a source that
    /// has not passed admission it goes only while the budget lasts.
    /// Requests (the edge's own, inside a dialog) are not metered.
    pub fn send(&self, bytes: Vec<u8>) {
        let code = status_code(&bytes);
        if let (Some(_), Path::Udp { dst, .. }) = (code, &self.path)
            && !self.egress.may_reply(dst.ip())
        {
            return;
        }
        if let Some(code) = code {
            self.egress.metrics.response(code);
        }
        match &self.path {
            Path::Udp { sock, dst } => match sock.try_send_to(&bytes, *dst) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let (sock, dst) = (sock.clone(), *dst);
                    tokio::spawn(async move {
                        let _ = sock.send_to(&bytes, dst).await;
                    });
                }
                Err(e) => tracing::debug!(%dst, error = %e, "UDP send failed"),
            },
            Path::Stream { tx, .. } => {
                let _ = tx.send(bytes);
            }
        }
    }

    /// Requests to `dst` on the same transport: over UDP from the same
    /// socket to another address; over a stream, the same connection.
    #[must_use]
    pub fn towards(&self, dst: SocketAddr) -> Self {
        match &self.path {
            Path::Udp { sock, .. } => Self {
                path: Path::Udp {
                    sock: sock.clone(),
                    dst,
                },
                egress: self.egress.clone(),
            },
            Path::Stream { .. } => self.clone(),
        }
    }

    /// The transport the request came over.
    pub fn transport(&self) -> Transport {
        match &self.path {
            Path::Udp { .. } => Transport::Udp,
            Path::Stream { transport, .. } => *transport,
        }
    }

    /// Whether the transport retransmits by itself (TCP, TLS).
    pub fn is_reliable(&self) -> bool {
        self.transport().is_reliable()
    }

    /// An unreliable replier that hands what is sent to a receiver.
    #[cfg(test)]
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Vec<u8>>) {
        Self::channel_over(Transport::Udp)
    }

    /// A replier standing for `transport` that hands what is sent to a
    /// receiver.
    #[cfg(test)]
    pub fn channel_over(transport: Transport) -> (Self, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let egress = Arc::new(Egress::new(
            Arc::new(crate::metrics::Metrics::new()),
            u32::MAX,
        ));
        (
            Self {
                path: Path::Stream { tx, transport },
                egress,
            },
            rx,
        )
    }
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` on the same port are two sockets.
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Room for bursts while the edge is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    UdpSocket::from_std(s.into())
}

pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

pub async fn serve_udp(sock: UdpSocket, edge: Arc<Edge>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let replier = Replier::udp(sock.clone(), src, edge.egress.clone());
        edge.handle(&buf[..n], src, &replier);
    }
}

/// Takes stream connections within `limits`: a locked-out source's or one
/// over a cap is reset at once, before anything is read. With `tls`, each
/// connection is a TLS one whose handshake must end within the
/// first-message deadline.
pub async fn serve_stream(
    listener: TcpListener,
    edge: Arc<Edge>,
    limits: Arc<ConnLimits>,
    tls: Option<Arc<ServerTls>>,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        match listener.accept().await {
            Ok((stream, src)) => {
                let slot = if edge.lockouts.is_locked(src.ip()) {
                    limits.refuse(Refusal::LockedOut);
                    Err(Refusal::LockedOut)
                } else {
                    limits.admit(src.ip())
                };
                let mut slot = match slot {
                    Ok(slot) => slot,
                    Err(why) => {
                        tracing::debug!(%src, transport = transport.name(), reason = why.name(), "connection refused");
                        // A reset instead of a close: no TIME_WAIT left here.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let edge = edge.clone();
                let bounds = *limits.limits();
                let acceptor = tls.as_ref().map(|t| t.acceptor());
                tokio::spawn(async move {
                    let why = match acceptor {
                        None => {
                            // TCP's own halves: no lock between reader and writer.
                            let halves = stream.into_split();
                            connection(halves, Transport::Tcp, src, &edge, &bounds, &mut slot).await
                        }
                        Some(acceptor) => {
                            match handshake(acceptor, stream, src, bounds.first_message, &mut slot)
                                .await
                            {
                                Ok(stream) => {
                                    connection(
                                        tokio::io::split(stream),
                                        Transport::Tls,
                                        src,
                                        &edge,
                                        &bounds,
                                        &mut slot,
                                    )
                                    .await
                                }
                                Err(why) => why,
                            }
                        }
                    };
                    tracing::debug!(%src, transport = transport.name(), reason = why.name(), "connection closed");
                    slot.close(why);
                });
            }
            Err(e) => {
                // Out of file descriptors or memory: let some close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The TLS handshake of a new connection, within `within` (the
/// first-message deadline); why the connection ends when it does not
/// complete.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    within: Duration,
    slot: &mut Slot,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Closure> {
    tokio::select! {
        r = tokio::time::timeout(within, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => {
                tracing::debug!(%src, error = %e, "TLS handshake failed");
                Err(Closure::Handshake)
            }
            Err(_) => Err(Closure::FirstMessage),
        },
        () = slot.locked_out() => Err(Closure::LockedOut),
    }
}

/// Closes the stream connections of sources as they are locked out
/// (checked every second).
pub async fn close_locked_out(limits: Arc<ConnLimits>, edge: std::sync::Weak<Edge>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(edge) = edge.upgrade() else { return };
        let n = limits.close_where(|ip| edge.lockouts.is_locked(ip));
        if n > 0 {
            tracing::info!(
                sources = n,
                "closing the TCP connections of locked-out sources"
            );
        }
    }
}

/// Raises the soft limit on open files to the hard limit, so that
/// `tcp.max_total` connections fit; the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// File descriptors kept for everything that is not a SIP connection
/// (listeners, the database, HTTP, callbacks, outbound legs and the idle
/// sockets of ended ones, at most [`crate::outbound::conn::IDLE_MAX`]).
const FD_RESERVE: u64 = 1024;

/// `total` lowered to what an open-file limit of `nofile` leaves for
/// connections.
#[must_use]
pub fn total_within(total: u32, nofile: u64) -> u32 {
    u32::try_from(nofile.saturating_sub(FD_RESERVE))
        .unwrap_or(u32::MAX)
        .clamp(1, total.max(1))
}

/// How long a response may take to leave before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a last response (a 400 before closing), how long the rest of what
/// the peer sent is read and discarded, so that closing does not reset the
/// connection before the response is read.
const LINGER: Duration = Duration::from_secs(1);

/// Reads messages framed by Content-Length within the limits; responses go
/// through a writer task so that late ones (after a callback) reach the
/// same connection. Returns why the connection ended.
async fn connection<R, W>(
    (mut rd, wr): (R, W),
    transport: Transport,
    src: SocketAddr,
    edge: &Arc<Edge>,
    limits: &Limits,
    slot: &mut Slot,
) -> Closure
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (done, done_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(write_responses(wr, rx, done_rx));
    let replier = Replier {
        path: Path::Stream { tx, transport },
        egress: edge.egress.clone(),
    };
    let mut framer = Framer::new(limits.max_header);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut first = true;
    let mut deadline = Instant::now() + limits.first_message;
    let why = 'conn: loop {
        loop {
            match framer.next_frame() {
                Frame::Message(n) => {
                    edge.handle(&framer.bytes()[..n], src, &replier);
                    framer.consume(n);
                    first = false;
                    deadline = Instant::now() + limits.idle;
                }
                Frame::Ping => {
                    replier.send(b"\r\n".to_vec());
                    if !first {
                        deadline = Instant::now() + limits.idle;
                    }
                }
                Frame::Incomplete => break,
                Frame::TooLarge => {
                    edge.metrics.tcp_framing_errors.fetch_add(1, Relaxed);
                    break 'conn Closure::TooLarge;
                }
                Frame::Unframeable { head, error } => {
                    edge.metrics.tcp_framing_errors.fetch_add(1, Relaxed);
                    tracing::debug!(%src, %error, "TCP stream cannot be framed; closing");
                    // RFC 3261 18.3: Content-Length is mandatory on a stream;
                    // the request is answered (400) before the close.
                    edge.refuse_unparseable(&framer.bytes()[..head], error, src, &replier);
                    break 'conn Closure::Framing;
                }
            }
        }
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) => break Closure::Peer,
                Ok(n) => framer.push(&chunk[..n]),
                Err(_) => break Closure::Error,
            },
            () = tokio::time::sleep_until(deadline) => {
                break if first { Closure::FirstMessage } else { Closure::Idle };
            }
            () = slot.locked_out() => break Closure::LockedOut,
        }
    };
    let _ = done.send(());
    drop(replier);
    if why == Closure::Framing {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, writer).await;
        let until = Instant::now() + LINGER;
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, rd.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
        }
    }
    why
}

/// Writes what the edge sends on a connection; once the reader is done,
/// what is queued still goes out, then the write side is shut down.
async fn write_responses<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    mut done: oneshot::Receiver<()>,
) {
    let mut closing = false;
    loop {
        let bytes = if closing {
            match rx.try_recv() {
                Ok(b) => b,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
                _ = &mut done => {
                    // Nothing new is taken once the reader is gone.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        // TLS keeps records until flushed; for TCP the flush is nothing.
        let written = async {
            wr.write_all(&bytes).await?;
            wr.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, written).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
}

#[cfg(test)]
mod tests;
