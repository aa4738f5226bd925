//! A SIP peer's socket in the rig: UDP, or one TCP stream with message
//! framing. Reads time out; nothing here blocks without a bound.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::netns::Netns;

pub enum Wire {
    Udp {
        sock: UdpSocket,
        /// Where [`Wire::send`] goes: the far end, or the last sender.
        peer: Option<SocketAddr>,
    },
    Tcp {
        stream: TcpStream,
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
            stream,
            peer,
            buf: Vec::new(),
        }
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
                        stream,
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
            Self::Tcp { stream, .. } => stream.local_addr().expect("local address"),
        }
    }

    #[must_use]
    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Tcp { .. })
    }

    /// `UDP` or `TCP`, for Via.
    #[must_use]
    pub fn via(&self) -> &'static str {
        if self.is_tcp() { "TCP" } else { "UDP" }
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
                stream.set_read_timeout(Some(left)).ok()?;
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
