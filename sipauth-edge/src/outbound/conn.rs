//! A leg's own socket: connected UDP, or a TCP stream framed by
//! Content-Length.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use super::{Target, Transport};

/// Bytes buffered on a TCP leg before a message must be complete.
const TCP_MAX_BUFFER: usize = 128 * 1024;

pub struct Conn {
    /// The local address the far end sees (Via, Contact).
    pub local: SocketAddr,
    pub transport: Transport,
    io: Io,
}

enum Io {
    Udp {
        sock: UdpSocket,
        /// Receive buffer (capacity for the largest datagram, never
        /// zeroed); each message is copied out of it.
        scratch: Vec<u8>,
    },
    Tcp {
        stream: TcpStream,
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

impl Conn {
    /// Opens the leg's socket towards `target`; a TCP connect gives up after
    /// `connect_timeout`.
    pub async fn open(target: &Target, connect_timeout: Duration) -> io::Result<Self> {
        match target.transport {
            Transport::Udp => {
                let any: SocketAddr = if target.addr.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                let sock = UdpSocket::bind(any).await?;
                sock.connect(target.addr).await?;
                Ok(Self {
                    local: sock.local_addr()?,
                    transport: Transport::Udp,
                    io: Io::Udp {
                        sock,
                        scratch: Vec::with_capacity(65_535),
                    },
                })
            }
            Transport::Tcp => {
                let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(target.addr))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out")
                    })??;
                let _ = stream.set_nodelay(true);
                Ok(Self {
                    local: stream.local_addr()?,
                    transport: Transport::Tcp,
                    io: Io::Tcp {
                        stream,
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

    /// Whether the transport retransmits by itself.
    pub fn reliable(&self) -> bool {
        match &self.io {
            Io::Udp { .. } => false,
            Io::Tcp { .. } => true,
            #[cfg(test)]
            Io::Mem { reliable, .. } => *reliable,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.io {
            Io::Udp { sock, .. } => sock.send(bytes).await.map(|_| ()),
            Io::Tcp { stream, .. } => stream.write_all(bytes).await,
            #[cfg(test)]
            Io::Mem { tx, .. } => tx
                .send(bytes.to_vec())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// The next message from the far end. Cancel-safe: a message is never
    /// lost when the future is dropped.
    pub async fn recv(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.io {
            Io::Udp { sock, scratch } => {
                scratch.clear();
                sock.recv_buf(scratch).await?;
                Ok(scratch.clone())
            }
            Io::Tcp { stream, buf } => loop {
                match sipauth_sip::frame(buf) {
                    Ok(Some(n)) => return Ok(buf.drain(..n).collect()),
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
            },
            #[cfg(test)]
            Io::Mem { rx, .. } => rx
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}
