//! Bounds on stream connections (TCP, TLS): a slot per
//! connection, granted by [`ConnLimits`] within a per-source and a total
//! cap, and the [`Framer`] that cuts a stream into messages (RFC 3261 18.3:
//! Content-Length frames a message on a stream) within a header-size limit
//! and answers RFC 5626 3.5.1 keep-alive pings.
//!
//! A source is what a lockout locks: an IPv4 address, or an IPv6 prefix of
//! `lockout.ipv6_prefix` bits (a /64 by default: one end site gets a /64,
//! so counting IPv6 per address would give one attacker 2^64 fresh caps).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sipauth_sip::ParseError;
use tokio::sync::watch;

use sipauth_kernel::lockout::source_key;

use crate::metrics::ConnCounters;

/// Body bytes a stream message may carry. SIP bodies (SDP, a few MIME
/// parts) are a few KiB; nothing the edge takes needs more.
pub const MAX_BODY: usize = 64 * 1024;

/// The bounds a listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once from one source.
    pub per_source: u32,
    /// Connections open at once, all sources together.
    pub total: u32,
    /// A connection that carries no complete message or keep-alive for
    /// this long is closed.
    pub idle: Duration,
    /// A new connection's first complete message must arrive within this.
    pub first_message: Duration,
    /// Bytes of a header section (start line to the empty line).
    pub max_header: usize,
    /// IPv6 sources are grouped per prefix of this many bits, as lockouts
    /// are (`lockout.ipv6_prefix`).
    pub ipv6_prefix: u8,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source has `per_source` connections open.
    PerSource,
    /// `total` connections are open.
    Total,
    /// Its source is locked out.
    LockedOut,
}

impl Refusal {
    pub const ALL: [Self; 3] = [Self::PerSource, Self::Total, Self::LockedOut];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::PerSource => "per_source",
            Self::Total => "total",
            Self::LockedOut => "locked_out",
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// The peer closed it.
    Peer,
    /// No complete message or keep-alive within the idle timeout.
    Idle,
    /// No complete first message within the first-message deadline.
    FirstMessage,
    /// A header section longer than the limit, or a body over [`MAX_BODY`].
    TooLarge,
    /// The stream cannot be framed (Content-Length missing or invalid).
    Framing,
    /// Its source was locked out.
    LockedOut,
    /// The TLS handshake failed.
    Handshake,
    /// A read or write failed.
    Error,
}

impl Closure {
    pub const ALL: [Self; 8] = [
        Self::Peer,
        Self::Idle,
        Self::FirstMessage,
        Self::TooLarge,
        Self::Framing,
        Self::LockedOut,
        Self::Handshake,
        Self::Error,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Idle => "idle",
            Self::FirstMessage => "first_message",
            Self::TooLarge => "too_large",
            Self::Framing => "framing",
            Self::LockedOut => "locked_out",
            Self::Handshake => "handshake",
            Self::Error => "error",
        }
    }
}

/// Open connections and who holds them.
pub struct ConnLimits {
    limits: Limits,
    counters: Arc<ConnCounters>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: u32,
    sources: HashMap<IpAddr, Source>,
}

#[derive(Default)]
struct Source {
    open: u32,
    /// Per address within the source: its open connections and the signal
    /// that closes them.
    addrs: HashMap<IpAddr, (u32, watch::Sender<bool>)>,
}

/// One admitted connection. Dropping it frees the slot.
pub struct Slot {
    owner: Arc<ConnLimits>,
    ip: IpAddr,
    kicked: watch::Receiver<bool>,
    closure: Option<Closure>,
}

// === impl ConnLimits ===

impl ConnLimits {
    #[must_use]
    pub fn new(limits: Limits, counters: Arc<ConnCounters>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counters,
            state: Mutex::new(State::default()),
        })
    }

    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The source `ip` counts against: the lockout's key of it (IPv4-mapped
    /// IPv6 counts as IPv4).
    fn source_of(&self, ip: IpAddr) -> IpAddr {
        source_key(ip, self.limits.ipv6_prefix)
    }

    /// A slot for a connection from `ip`, or why there is none (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ip = ip.to_canonical();
        let mut state = self.state.lock().expect("connection slots");
        let refusal = if state.total >= self.limits.total {
            Some(Refusal::Total)
        } else if state
            .sources
            .get(&self.source_of(ip))
            .is_some_and(|s| s.open >= self.limits.per_source)
        {
            Some(Refusal::PerSource)
        } else {
            None
        };
        if let Some(why) = refusal {
            drop(state);
            self.refuse(why);
            return Err(why);
        }
        state.total += 1;
        let source = state.sources.entry(self.source_of(ip)).or_default();
        source.open += 1;
        let (n, kick) = source
            .addrs
            .entry(ip)
            .or_insert_with(|| (0, watch::channel(false).0));
        *n += 1;
        let kicked = kick.subscribe();
        drop(state);
        self.counters.open.fetch_add(1, Relaxed);
        Ok(Slot {
            owner: self.clone(),
            ip,
            kicked,
            closure: None,
        })
    }

    /// Counts a connection refused before it asked for a slot.
    pub fn refuse(&self, why: Refusal) {
        self.counters.refused(why);
    }

    /// Closes every connection whose address `locked` says is locked out;
    /// how many addresses that was.
    pub fn close_where(&self, locked: impl Fn(IpAddr) -> bool) -> usize {
        let addrs: Vec<IpAddr> = {
            let state = self.state.lock().expect("connection slots");
            state
                .sources
                .values()
                .flat_map(|s| s.addrs.keys().copied())
                .collect()
        };
        // Asked without the lock held: the lockout table may be a map in
        // the kernel.
        let locked: Vec<IpAddr> = addrs.into_iter().filter(|ip| locked(*ip)).collect();
        let state = self.state.lock().expect("connection slots");
        for ip in &locked {
            if let Some((_, kick)) = state
                .sources
                .get(&self.source_of(*ip))
                .and_then(|s| s.addrs.get(ip))
            {
                kick.send_replace(true);
            }
        }
        locked.len()
    }

    /// Connections open now.
    #[must_use]
    pub fn open(&self) -> u32 {
        self.state.lock().expect("connection slots").total
    }

    fn release(&self, ip: IpAddr) {
        let mut state = self.state.lock().expect("connection slots");
        state.total = state.total.saturating_sub(1);
        let key = self.source_of(ip);
        if let Some(source) = state.sources.get_mut(&key) {
            source.open = source.open.saturating_sub(1);
            if let Some((n, _)) = source.addrs.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    source.addrs.remove(&ip);
                }
            }
            if source.open == 0 {
                state.sources.remove(&key);
            }
        }
        drop(state);
        self.counters.open.fetch_sub(1, Relaxed);
    }
}

// === impl Slot ===

impl Slot {
    /// Resolves when the connection's source is locked out.
    pub async fn locked_out(&mut self) {
        if self.kicked.wait_for(|k| *k).await.is_err() {
            // The sender lives as long as any slot of the address.
            std::future::pending::<()>().await;
        }
    }

    /// Records why the connection ended; counted when the slot is freed.
    pub fn close(&mut self, why: Closure) {
        self.closure = Some(why);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner
            .counters
            .closed(self.closure.unwrap_or(Closure::Error));
        self.owner.release(self.ip);
    }
}

/// What the bytes at the front of a stream are.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: the first `n` buffered bytes.
    Message(usize),
    /// A double-CRLF keep-alive, consumed; RFC 5626 3.5.1 answers it with
    /// one CRLF.
    Ping,
    /// More bytes are needed.
    Incomplete,
    /// The header section is over the limit or the body over
    /// [`MAX_BODY`]: the connection must close.
    TooLarge,
    /// The header section is complete (the first `head` bytes) but the
    /// message cannot be framed (Content-Length missing, repeated or
    /// invalid): it may be answered, then the connection must close.
    Unframeable { head: usize, error: ParseError },
}

/// The receive buffer of one stream connection.
pub struct Framer {
    buf: Vec<u8>,
    max_header: usize,
    /// Bytes already searched for the end of the header section.
    scanned: usize,
    /// Where the header section of the front message ends (after its
    /// empty line), once found.
    head_end: Option<usize>,
}

// === impl Framer ===

impl Framer {
    #[must_use]
    pub fn new(max_header: usize) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            max_header,
            scanned: 0,
            head_end: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffered bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` bytes (a message that was handled).
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scanned = 0;
        self.head_end = None;
    }

    /// What the front of the buffer is.
    pub fn next_frame(&mut self) -> Frame {
        if self.head_end.is_none() {
            // Keep-alives between messages (RFC 5626 3.5.1); a lone CRLF
            // (a pong, or a CRLF before a start line) is skipped.
            loop {
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.consume(4);
                    return Frame::Ping;
                }
                if self.buf.starts_with(b"\r\n") && self.buf.len() >= 4 {
                    self.consume(2);
                    continue;
                }
                if self.buf.starts_with(b"\r\n") || self.buf == b"\r" {
                    return Frame::Incomplete;
                }
                break;
            }
            let from = self.scanned.saturating_sub(3);
            let Some(i) = find_blank_line(&self.buf[from..]) else {
                self.scanned = self.buf.len();
                return if self.buf.len() > self.max_header {
                    Frame::TooLarge
                } else {
                    Frame::Incomplete
                };
            };
            self.head_end = Some(from + i + 4);
        }
        let head = self.head_end.unwrap_or(self.buf.len());
        if head > self.max_header {
            return Frame::TooLarge;
        }
        match sipauth_sip::frame(&self.buf) {
            Ok(Some(n)) => Frame::Message(n),
            Ok(None) if self.buf.len() - head > MAX_BODY => Frame::TooLarge,
            Ok(None) => Frame::Incomplete,
            Err(ParseError::HeadersTooLarge { .. }) => Frame::TooLarge,
            Err(error) => Frame::Unframeable { head, error },
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: u32, total: u32) -> Limits {
        Limits {
            per_source,
            total,
            idle: Duration::from_mins(3),
            first_message: Duration::from_secs(10),
            max_header: 1024,
            ipv6_prefix: 64,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_grouped_by_the_lockout_prefix() {
        for (prefix, second, shares) in [
            (128, "2001:db8:1:2::2", false),
            (64, "2001:db8:1:2:ffff::1", true),
            (64, "2001:db8:1:3::1", false),
            (48, "2001:db8:1:ffff::9", true),
            (48, "2001:db8:2::1", false),
        ] {
            let l = ConnLimits::new(
                Limits {
                    ipv6_prefix: prefix,
                    ..limits(1, 100)
                },
                Arc::new(ConnCounters::default()),
            );
            let _first = l.admit(ip("2001:db8:1:2::1")).unwrap();
            assert_eq!(
                l.admit(ip(second)).err(),
                shares.then_some(Refusal::PerSource),
                "/{prefix} {second}"
            );
        }
    }

    #[test]
    fn per_source_cap_counts_ipv4_addresses_and_ipv6_slash_64s() {
        let counters = Arc::new(ConnCounters::default());
        let l = ConnLimits::new(limits(2, 100), counters.clone());
        let a = [
            l.admit(ip("192.0.2.1")).unwrap(),
            l.admit(ip("192.0.2.1")).unwrap(),
        ];
        assert_eq!(l.admit(ip("192.0.2.1")).err(), Some(Refusal::PerSource));
        // Another IPv4 address is another source.
        let b = l.admit(ip("192.0.2.2")).unwrap();
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            l.admit(ip("::ffff:192.0.2.1")).err(),
            Some(Refusal::PerSource)
        );
        // Two addresses of one /64 share a cap; another /64 does not.
        let c = [
            l.admit(ip("2001:db8:1:2::1")).unwrap(),
            l.admit(ip("2001:db8:1:2:ffff::9")).unwrap(),
        ];
        assert_eq!(
            l.admit(ip("2001:db8:1:2::77")).err(),
            Some(Refusal::PerSource)
        );
        let d = l.admit(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(l.open(), 6);
        assert_eq!(counters.open.load(Relaxed), 6);
        assert_eq!(counters.refused_count(Refusal::PerSource), 3);
        // A freed slot is taken again.
        drop(a);
        let again = l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.open(), 5);
        drop((b, c, d, again));
        assert_eq!(l.open(), 0);
        assert_eq!(counters.open.load(Relaxed), 0);
        assert!(l.state.lock().unwrap().sources.is_empty());
        // Dropped without a reason: counted as an error.
        assert_eq!(counters.closed_count(Closure::Error), 7);
    }

    #[test]
    fn total_cap_refuses_every_source() {
        let counters = Arc::new(ConnCounters::default());
        let l = ConnLimits::new(limits(10, 3), counters.clone());
        let mut slots: Vec<Slot> = (1..=3)
            .map(|i| l.admit(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(l.admit(ip("198.51.100.1")).err(), Some(Refusal::Total));
        assert_eq!(counters.refused_count(Refusal::Total), 1);
        let mut s = slots.pop().unwrap();
        s.close(Closure::Idle);
        drop(s);
        assert_eq!(counters.closed_count(Closure::Idle), 1);
        assert!(l.admit(ip("198.51.100.1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_locked_out_address_has_its_connections_closed() {
        let counters = Arc::new(ConnCounters::default());
        let l = ConnLimits::new(limits(10, 100), counters);
        let mut bad = [
            l.admit(ip("2001:db8::1")).unwrap(),
            l.admit(ip("2001:db8::1")).unwrap(),
        ];
        let mut good = l.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(l.close_where(|a| a == ip("2001:db8::1")), 1);
        for s in &mut bad {
            tokio::time::timeout(Duration::from_millis(1), s.locked_out())
                .await
                .expect("closed");
        }
        // The other address of the same /64 stays.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), good.locked_out())
                .await
                .is_err()
        );
        assert_eq!(l.close_where(|_| false), 0);
    }

    fn framer() -> Framer {
        Framer::new(256)
    }

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn frames_messages_fed_a_byte_at_a_time() {
        let mut f = framer();
        let stream = [MSG, MSG].concat();
        let mut found = Vec::new();
        for b in &stream {
            f.push(&[*b]);
            while let Frame::Message(n) = f.next_frame() {
                found.push(f.bytes()[..n].to_vec());
                f.consume(n);
            }
        }
        assert_eq!(found, vec![MSG.to_vec(), MSG.to_vec()]);
        assert!(f.bytes().is_empty());
    }

    #[test]
    fn pings_are_told_apart_from_messages() {
        let mut f = framer();
        f.push(b"\r\n\r\n\r\n");
        assert_eq!(f.next_frame(), Frame::Ping);
        assert_eq!(f.next_frame(), Frame::Incomplete);
        f.push(MSG);
        // The lone CRLF is skipped: the message follows.
        assert_eq!(f.next_frame(), Frame::Message(MSG.len()));
    }

    #[test]
    fn header_limit_counts_bytes_before_the_empty_line() {
        let mut f = framer();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nX: ");
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_frame(), Frame::Incomplete);
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_frame(), Frame::TooLarge);
        // A complete header section over the limit, in one piece.
        let mut f = framer();
        let big = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(300)
        );
        f.push(big.as_bytes());
        assert_eq!(f.next_frame(), Frame::TooLarge);
    }

    #[test]
    fn a_body_over_the_limit_closes() {
        let mut f = framer();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n");
        assert_eq!(f.next_frame(), Frame::Incomplete);
        f.push(&vec![0u8; MAX_BODY + 1]);
        assert_eq!(f.next_frame(), Frame::TooLarge);
    }

    #[test]
    fn missing_content_length_is_unframeable_once_the_headers_are_complete() {
        let mut f = framer();
        let head = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n";
        f.push(&head[..20]);
        assert_eq!(f.next_frame(), Frame::Incomplete);
        f.push(&head[20..]);
        assert_eq!(
            f.next_frame(),
            Frame::Unframeable {
                head: head.len(),
                error: ParseError::MissingContentLength
            }
        );
    }
}
