//! A leg's own socket: connected UDP, or a TCP or TLS stream framed by
//! Content-Length.
//!
//! A UDP leg's socket outlives its leg: when the leg ends it goes back to
//! a [`UdpPool`], and the next leg to the same target takes it, so a call
//! does not pay for opening, binding, connecting and closing a socket.
//! A leg that ended by answering the far end's BYE leaves that answer
//! with its socket ([`Conn::keep_answer`]): RFC 3261 17.2.2 keeps the
//! BYE's server transaction for Timer J (64*T1) to answer its
//! retransmissions (our 200 may have been lost), so the socket waits out
//! that time answering them before it goes back. Anything else that
//! still arrives for an ended leg (a late retransmission of a response)
//! is read by the next one and matches none of its transactions or
//! dialogs: ignored, or answered 481.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sipauth_sip::OwnedMessage;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use super::{Target, Transport};
use crate::tls::{ClientTls, HandshakeError};

/// Bytes buffered on a stream leg before a message must be complete.
const TCP_MAX_BUFFER: usize = 128 * 1024;

pub struct Conn {
    /// The local address the far end sees (Via, Contact).
    pub local: SocketAddr,
    pub transport: Transport,
    io: Io,
}

enum Io {
    Udp(Pooled),
    /// TCP or TLS: bytes read and not yet framed stay in `buf`.
    Stream {
        stream: Box<dyn ByteStream>,
        buf: Vec<u8>,
    },
    /// A pair of channels standing in for the network, in tests.
    #[cfg(test)]
    Mem {
        tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
        rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        reliable: bool,
    },
}

/// A UDP leg's socket, connected to its target.
struct Udp {
    sock: UdpSocket,
    /// Its local address, asked once.
    local: SocketAddr,
    /// Receive buffer (capacity for the largest datagram, never zeroed);
    /// each message is copied out of it.
    scratch: Vec<u8>,
}

impl Udp {
    async fn open(target: SocketAddr) -> io::Result<Self> {
        let any: SocketAddr = if target.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = UdpSocket::bind(any).await?;
        sock.connect(target).await?;
        Ok(Self {
            local: sock.local_addr()?,
            sock,
            scratch: Vec::with_capacity(65_535),
        })
    }
}

/// A [`Udp`] socket lent to one leg, returned to its pool when the leg's
/// connection is dropped.
struct Pooled {
    /// `Some` until dropped.
    udp: Option<Udp>,
    pool: UdpPool,
    target: SocketAddr,
    /// The leg's answer to the far end's BYE, sent again to its
    /// retransmissions until Timer J, once the leg has ended too.
    answer: Option<KeptAnswer>,
}

/// A final response sent to the far end's request, kept for
/// retransmissions of the request (its top Via branch) until `until`.
struct KeptAnswer {
    branch: String,
    bytes: Vec<u8>,
    until: tokio::time::Instant,
}

impl Pooled {
    fn udp(&mut self) -> &mut Udp {
        self.udp
            .as_mut()
            .expect("a pooled socket is held until dropped")
    }

    fn local(&self) -> SocketAddr {
        self.udp
            .as_ref()
            .expect("a pooled socket is held until dropped")
            .local
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(udp) = self.udp.take() else {
            return;
        };
        let kept = self
            .answer
            .take()
            .filter(|a| a.until > tokio::time::Instant::now());
        match (kept, tokio::runtime::Handle::try_current()) {
            (Some(answer), Ok(rt)) if self.pool.reserve() => {
                rt.spawn(self.pool.clone().linger(self.target, udp, answer));
            }
            _ => self.pool.put(self.target, udp),
        }
    }
}

/// Idle sockets kept per target: more than the legs to one target that
/// end at about the same time.
const IDLE_PER_TARGET: usize = 256;
/// Idle sockets kept in all, with those still answering for their ended
/// leg ([`UdpPool::linger`]): half of the file descriptors the edge keeps
/// beside its SIP connections (see `transport::total_within`).
pub(crate) const IDLE_MAX: usize = 512;
/// How long a socket may wait for its next leg.
const IDLE_FOR: Duration = Duration::from_mins(1);

/// UDP sockets of ended legs, by the target they are connected to.
#[derive(Clone, Default)]
pub struct UdpPool {
    inner: Arc<Mutex<Idle>>,
}

#[derive(Default)]
struct Idle {
    by_target: HashMap<SocketAddr, Vec<(Udp, Instant)>>,
    count: usize,
    /// Sockets waiting out a kept answer ([`UdpPool::linger`]); with the
    /// idle ones, within [`IDLE_MAX`].
    lingering: usize,
    /// When expired sockets of every target were last closed.
    swept: Option<Instant>,
}

impl std::fmt::Debug for UdpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl UdpPool {
    /// A socket connected to `target`, lent until the [`Pooled`] is
    /// dropped: an idle one when there is one, else a new one.
    async fn lend(&self, target: SocketAddr) -> io::Result<Pooled> {
        let udp = match self.take_idle(target) {
            Some(udp) => udp,
            None => Udp::open(target).await?,
        };
        Ok(Pooled {
            udp: Some(udp),
            pool: self.clone(),
            target,
            answer: None,
        })
    }

    /// Counts a socket about to wait out a kept answer, when there is room
    /// for it; without room it is closed when its leg ends.
    fn reserve(&self) -> bool {
        let mut idle = self.inner.lock().expect("UDP pool");
        if idle.count + idle.lingering >= IDLE_MAX {
            return false;
        }
        idle.lingering += 1;
        true
    }

    /// Answers retransmissions of the request `answer` answered until its
    /// time is up, then puts the socket back. Whatever else arrives
    /// meanwhile is dropped: the far end ended the dialog.
    async fn linger(self, target: SocketAddr, mut udp: Udp, answer: KeptAnswer) {
        let until = tokio::time::sleep_until(answer.until);
        tokio::pin!(until);
        loop {
            udp.scratch.clear();
            tokio::select! {
                () = &mut until => break,
                // An error here is the far end's ICMP unreachable, taken
                // off the socket: nothing to answer.
                got = udp.sock.recv_buf(&mut udp.scratch) => {
                    let again = got.is_ok() && sipauth_sip::parse(&udp.scratch).is_ok_and(|m| {
                        m.method().is_some_and(|x| x != "ACK")
                            && m.top_via().ok().and_then(|v| v.branch) == Some(answer.branch.as_str())
                    });
                    if again {
                        let _ = udp.sock.send(&answer.bytes).await;
                    }
                }
            }
        }
        self.inner.lock().expect("UDP pool").lingering -= 1;
        self.put(target, udp);
    }

    /// The newest idle socket to `target` that has not waited too long,
    /// with any error the far end left on it (an ICMP unreachable) cleared.
    fn take_idle(&self, target: SocketAddr) -> Option<Udp> {
        let mut idle = self.inner.lock().expect("UDP pool");
        let Idle {
            by_target, count, ..
        } = &mut *idle;
        let list = by_target.get_mut(&target)?;
        let now = Instant::now();
        let mut found = None;
        while let Some((udp, since)) = list.pop() {
            *count -= 1;
            if now.duration_since(since) < IDLE_FOR {
                found = Some(udp);
                break;
            }
        }
        if list.is_empty() {
            by_target.remove(&target);
        }
        drop(idle);
        let udp = found?;
        let _ = udp.sock.take_error();
        Some(udp)
    }

    fn put(&self, target: SocketAddr, udp: Udp) {
        let mut idle = self.inner.lock().expect("UDP pool");
        let now = Instant::now();
        if idle
            .swept
            .is_none_or(|at| now.duration_since(at) >= IDLE_FOR)
        {
            idle.sweep(now);
        }
        let Idle {
            by_target,
            count,
            lingering,
            ..
        } = &mut *idle;
        if *count + *lingering >= IDLE_MAX {
            return;
        }
        let list = by_target.entry(target).or_default();
        if list.len() < IDLE_PER_TARGET {
            list.push((udp, now));
            *count += 1;
        }
    }

    /// Idle sockets now.
    #[must_use]
    pub fn idle(&self) -> usize {
        self.inner.lock().expect("UDP pool").count
    }
}

impl Idle {
    /// Closes the sockets that waited too long, of every target.
    fn sweep(&mut self, now: Instant) {
        self.by_target.retain(|_, list| {
            list.retain(|(_, since)| now.duration_since(*since) < IDLE_FOR);
            !list.is_empty()
        });
        self.count = self.by_target.values().map(Vec::len).sum();
        self.swept = Some(now);
    }
}

/// A connected byte stream: a TCP connection, or TLS over one.
trait ByteStream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin> ByteStream for S {}

/// Why a leg's connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The TLS server's certificate was refused.
    #[error(transparent)]
    Certificate(HandshakeError),
}

impl Conn {
    /// Opens the leg's socket towards `target` (over UDP, one from `udp`
    /// when it holds one); a TCP connect (and a TLS handshake after it)
    /// gives up after `connect_timeout`. TLS needs `tls`.
    pub async fn open(
        target: &Target,
        connect_timeout: Duration,
        tls: Option<&ClientTls>,
        udp: &UdpPool,
    ) -> Result<Self, OpenError> {
        let connect = async {
            let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(target.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
            let _ = stream.set_nodelay(true);
            Ok::<_, io::Error>(stream)
        };
        match target.transport {
            Transport::Udp => {
                let sock = udp.lend(target.addr).await?;
                Ok(Self {
                    local: sock.local(),
                    transport: Transport::Udp,
                    io: Io::Udp(sock),
                })
            }
            Transport::Tcp => {
                let stream = connect.await?;
                Ok(Self {
                    local: stream.local_addr()?,
                    transport: Transport::Tcp,
                    io: Io::Stream {
                        stream: Box::new(stream),
                        buf: Vec::with_capacity(4096),
                    },
                })
            }
            Transport::Tls => {
                let tls = tls.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::Unsupported, "no TLS client configuration")
                })?;
                let tcp = connect.await?;
                let local = tcp.local_addr()?;
                let stream = tokio::time::timeout(connect_timeout, tls.connect(&target.host, tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })?
                    .map_err(|e| match e {
                        HandshakeError::Io(io) => OpenError::Io(io),
                        refused => OpenError::Certificate(refused),
                    })?;
                Ok(Self {
                    local,
                    transport: Transport::Tls,
                    io: Io::Stream {
                        stream: Box::new(stream),
                        buf: Vec::with_capacity(4096),
                    },
                })
            }
        }
    }

    /// A connection whose far end is the returned channel pair.
    #[cfg(test)]
    pub fn mem(
        reliable: bool,
    ) -> (
        Self,
        tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let (to_far, from_leg) = tokio::sync::mpsc::unbounded_channel();
        let (to_leg, from_far) = tokio::sync::mpsc::unbounded_channel();
        (
            Self {
                local: SocketAddr::from(([192, 0, 2, 1], 40000)),
                transport: if reliable {
                    Transport::Tcp
                } else {
                    Transport::Udp
                },
                io: Io::Mem {
                    tx: to_far,
                    rx: from_far,
                    reliable,
                },
            },
            to_leg,
            from_leg,
        )
    }

    /// Keeps `bytes`, the final answer to the far end's BYE of top Via
    /// `branch`, to send again to the BYE's retransmissions for
    /// `timer_j`, also after this connection is dropped (see the module
    /// doc). Over UDP only: a reliable transport does not retransmit.
    pub fn keep_answer(&mut self, branch: &str, bytes: Vec<u8>, timer_j: Duration) {
        if let Io::Udp(pooled) = &mut self.io {
            pooled.answer = Some(KeptAnswer {
                branch: branch.to_owned(),
                bytes,
                until: tokio::time::Instant::now() + timer_j,
            });
        }
    }

    /// Whether the transport retransmits by itself.
    pub fn reliable(&self) -> bool {
        match &self.io {
            Io::Udp { .. } => false,
            Io::Stream { .. } => true,
            #[cfg(test)]
            Io::Mem { reliable, .. } => *reliable,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.io {
            Io::Udp(pooled) => pooled.udp().sock.send(bytes).await.map(|_| ()),
            // TLS keeps records until flushed; for TCP the flush is nothing.
            Io::Stream { stream, .. } => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            #[cfg(test)]
            Io::Mem { tx, .. } => tx
                .send(bytes.to_vec())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// The next message from the far end, parsed once here: the layers
    /// above read it without parsing again. A message that does not parse
    /// is dropped (RFC 3261 18.3: nothing can be answered to it on a leg).
    /// Cancel-safe: a message is never lost when the future is dropped.
    pub async fn recv(&mut self) -> io::Result<OwnedMessage> {
        loop {
            let parsed = match &mut self.io {
                Io::Udp(pooled) => {
                    let Udp { sock, scratch, .. } = pooled.udp();
                    scratch.clear();
                    sock.recv_buf(scratch).await?;
                    parse(scratch)
                }
                Io::Stream { stream, buf } => {
                    let n = next_frame(stream, buf).await?;
                    let parsed = parse(&buf[..n]);
                    buf.drain(..n);
                    parsed
                }
                #[cfg(test)]
                Io::Mem { rx, .. } => {
                    let raw = rx
                        .recv()
                        .await
                        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                    parse(&raw)
                }
            };
            if let Some(msg) = parsed {
                return Ok(msg);
            }
        }
    }
}

/// One received message as the leg keeps it; `None` when it does not
/// parse.
fn parse(raw: &[u8]) -> Option<OwnedMessage> {
    match sipauth_sip::parse(raw) {
        Ok(m) => Some(OwnedMessage::from(&m)),
        Err(e) => {
            tracing::debug!(error = %e, "outbound leg: unparseable message dropped");
            None
        }
    }
}

/// Reads `stream` into `buf` until it holds a whole message, and returns
/// its length (Content-Length framing). Cancel-safe: what was read stays
/// in `buf`.
async fn next_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        match sipauth_sip::frame(buf) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(e) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
        if buf.len() > TCP_MAX_BUFFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            ));
        }
        // Into the buffer's spare room (no chunk on the stack: this
        // future lives inside every call's state).
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RINGING: &[u8] =
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bKr\r\n\
        From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>;tag=2\r\nCall-ID: c\r\n\
        CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n";

    /// The far end's response reaches the leg parsed, with its body; what
    /// does not parse never reaches it.
    #[tokio::test]
    async fn a_far_response_arrives_parsed_and_junk_is_dropped() {
        let (mut conn, to_leg, _from_leg) = Conn::mem(false);
        to_leg.send(b"\xff\xfe junk\r\n\r\n".to_vec()).unwrap();
        to_leg.send(b"SIP/2.0 99 Bad\r\n\r\n".to_vec()).unwrap();
        to_leg.send(RINGING.to_vec()).unwrap();
        let got = conn.recv().await.unwrap();
        let m = got.message();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.cseq(), Ok((1, "INVITE")));
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKr"));
        assert_eq!(m.header("Content-Type"), Some("application/sdp"));
        assert_eq!(m.body(), b"v=0\r\n");
        drop(to_leg);
        assert_eq!(
            conn.recv().await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    fn udp_target(addr: SocketAddr) -> Target {
        Target {
            uri: format!("sip:b@{addr}"),
            addr,
            transport: Transport::Udp,
            host: addr.ip().to_string(),
        }
    }

    /// A UDP leg's socket goes back to the pool when its connection is
    /// dropped, and the next leg to the same target takes it; an error the
    /// far end left on it (ICMP port unreachable) does not reach the next
    /// leg, and another target gets a socket of its own.
    #[tokio::test]
    async fn udp_sockets_are_lent_per_target_and_come_back() {
        let pool = UdpPool::default();
        let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = udp_target(far.local_addr().unwrap());
        let mut first = Conn::open(&target, Duration::from_secs(1), None, &pool)
            .await
            .unwrap();
        let port = first.local.port();
        first.send(RINGING).await.unwrap();
        let mut buf = [0u8; 2048];
        let (_, from) = far.recv_from(&mut buf).await.unwrap();
        assert_eq!(from.port(), port);
        drop(first);
        assert_eq!(pool.idle(), 1);

        // The far end goes away; the leg's next datagram draws an ICMP
        // port unreachable, which the kernel keeps on the socket.
        let far_addr = far.local_addr().unwrap();
        drop(far);
        let mut second = Conn::open(&target, Duration::from_secs(1), None, &pool)
            .await
            .unwrap();
        assert_eq!(second.local.port(), port, "the idle socket is taken again");
        assert_eq!(pool.idle(), 0);
        let _ = second.send(RINGING).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(second);

        let far = UdpSocket::bind(far_addr).await.unwrap();
        let mut third = Conn::open(&target, Duration::from_secs(1), None, &pool)
            .await
            .unwrap();
        assert_eq!(third.local.port(), port);
        far.send_to(RINGING, third.local).await.unwrap();
        let got = third.recv().await.unwrap();
        assert_eq!(got.message().status(), Some(180));

        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = Conn::open(
            &udp_target(other.local_addr().unwrap()),
            Duration::from_secs(1),
            None,
            &pool,
        )
        .await
        .unwrap();
        assert_ne!(elsewhere.local.port(), port);
        drop((third, elsewhere));
        assert_eq!(pool.idle(), 2);
    }

    fn bye(branch: &str) -> Vec<u8> {
        format!(
            "BYE sip:a@192.0.2.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
             From: <sip:b@192.0.2.2>;tag=2\r\nTo: <sip:a@192.0.2.1>;tag=1\r\nCall-ID: c\r\n\
             CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// A leg that answered the far end's BYE leaves the answer with its
    /// socket: once the leg is over, a retransmission of that BYE gets the
    /// answer again and any other request nothing, until Timer J; then the
    /// socket is idle in the pool, and the next leg takes it.
    #[tokio::test]
    async fn a_kept_answer_is_sent_again_after_the_leg_until_timer_j() {
        const OK: &[u8] = b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let pool = UdpPool::default();
        let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = udp_target(far.local_addr().unwrap());
        let mut leg = Conn::open(&target, Duration::from_secs(1), None, &pool)
            .await
            .unwrap();
        let local = leg.local;
        leg.keep_answer("z9hG4bKbye", OK.to_vec(), Duration::from_secs(1));
        drop(leg);
        assert_eq!(pool.idle(), 0, "not lent while it answers");

        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            far.send_to(&bye("z9hG4bKbye"), local).await.unwrap();
            let (n, from) = tokio::time::timeout(Duration::from_secs(1), far.recv_from(&mut buf))
                .await
                .expect("the retransmission is answered")
                .unwrap();
            assert_eq!((&buf[..n], from), (OK, local));
        }
        far.send_to(&bye("z9hG4bKother"), local).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            far.try_recv_from(&mut buf).is_err(),
            "another request gets nothing"
        );

        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(pool.idle(), 1, "back in the pool after Timer J");
        let next = Conn::open(&target, Duration::from_secs(1), None, &pool)
            .await
            .unwrap();
        assert_eq!(next.local, local);
    }

    /// Over TCP, two messages in one read are framed and parsed one by
    /// one.
    #[tokio::test]
    async fn tcp_frames_then_parses_each_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target {
            uri: "sip:b@127.0.0.1;transport=tcp".to_owned(),
            addr: listener.local_addr().unwrap(),
            transport: Transport::Tcp,
            host: "127.0.0.1".to_owned(),
        };
        let far = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let ok = String::from_utf8(RINGING.to_vec())
                .unwrap()
                .replace("180 Ringing", "200 OK");
            let both = [RINGING, ok.as_bytes()].concat();
            s.write_all(&both).await.unwrap();
            s
        });
        let mut conn = Conn::open(&target, Duration::from_secs(1), None, &UdpPool::default())
            .await
            .unwrap();
        let _far = far.await.unwrap();
        let first = conn.recv().await.unwrap();
        let second = conn.recv().await.unwrap();
        assert_eq!(first.message().status(), Some(180));
        assert_eq!(second.message().status(), Some(200));
        assert_eq!(second.message().body(), b"v=0\r\n");
    }
}
