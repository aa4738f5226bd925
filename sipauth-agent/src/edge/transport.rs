//! SIP over UDP and TCP, IPv4 and IPv6, and the [`Replier`] that carries
//! responses back the way the request came.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::Edge;
use super::egress::Egress;

/// A TCP stream that carries nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_mins(5);
/// Bytes buffered per TCP connection before a message must be complete.
const TCP_MAX_BUFFER: usize = 128 * 1024;

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
    /// A stream connection's writer task (or, in tests, a receiver).
    Stream {
        tx: mpsc::UnboundedSender<Vec<u8>>,
        reliable: bool,
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

    /// Whether the transport retransmits by itself (TCP).
    pub fn is_reliable(&self) -> bool {
        match &self.path {
            Path::Udp { .. } => false,
            Path::Stream { reliable, .. } => *reliable,
        }
    }

    /// An unreliable replier that hands what is sent to a receiver.
    #[cfg(test)]
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let egress = Arc::new(Egress::new(
            Arc::new(crate::metrics::Metrics::new()),
            u32::MAX,
        ));
        (
            Self {
                path: Path::Stream {
                    tx,
                    reliable: false,
                },
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

pub async fn serve_tcp(listener: TcpListener, edge: Arc<Edge>) {
    loop {
        match listener.accept().await {
            Ok((stream, src)) => {
                let edge = edge.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, src, &edge).await {
                        tracing::debug!(%src, error = %e, "TCP connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads messages framed by Content-Length; responses go through a writer
/// task so that late ones (after a callback) reach the same connection.
async fn connection(stream: TcpStream, src: SocketAddr, edge: &Arc<Edge>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let replier = Replier {
        path: Path::Stream { tx, reliable: true },
        egress: edge.egress.clone(),
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match sipauth_sip::frame(&buf) {
                Ok(Some(n)) => {
                    edge.handle(&buf[..n], src, &replier);
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    edge.metrics.tcp_framing_errors.fetch_add(1, Relaxed);
                    tracing::debug!(%src, error = %e, "TCP stream cannot be framed; closing");
                    return Ok(());
                }
            }
        }
        if buf.len() > TCP_MAX_BUFFER {
            edge.metrics.tcp_framing_errors.fetch_add(1, Relaxed);
            return Ok(());
        }
        let n = match tokio::time::timeout(TCP_IDLE, rd.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
