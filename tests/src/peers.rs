//! Real peers: sipp scenarios, trafgen floods, and plain sockets opened
//! inside a namespace.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::topo::Link;

static NEXT_PORT: AtomicU16 = AtomicU16::new(5100);

#[must_use]
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A sipp run from one namespace.
pub struct Sipp<'a> {
    pub ns: &'a Netns,
    pub scenario: &'a str,
    pub local: IpAddr,
    pub target: SocketAddr,
    pub tcp: bool,
    pub calls: u32,
    /// Calls per second.
    pub rate: u32,
    /// The Request-URI user part (`[service]`).
    pub service: &'a str,
    /// Digest username and password (`-au`, `-ap`).
    pub auth: Option<(&'a str, &'a str)>,
    /// Scenario variables (`-set name value`, `[$name]` in messages).
    pub vars: Vec<(&'a str, String)>,
}

impl Sipp<'_> {
    /// The command, ready to spawn.
    #[must_use]
    pub fn command(&self) -> Command {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let mut c = self.ns.cmd("sipp");
        c.arg("-sf")
            .arg(scenario(self.scenario))
            .args(["-t", if self.tcp { "t1" } else { "u1" }])
            .args(["-i", &self.local.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-s", self.service])
            .args(["-m", &self.calls.to_string()])
            .args(["-r", &self.rate.to_string()])
            .args(["-timeout", "30s", "-timeout_error", "-nostdin"]);
        if let Some((user, password)) = self.auth {
            c.args(["-au", user, "-ap", password]);
        }
        for (name, value) in &self.vars {
            c.args(["-set", name, value]);
        }
        c.arg(self.target.to_string());
        c.current_dir(std::env::temp_dir());
        c
    }

    /// Runs to the end; Err carries sipp's output when a call failed.
    pub fn run(&self) -> Result<(), String> {
        let out = self
            .command()
            .output()
            .map_err(|e| format!("cannot start sipp: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "sipp {} ({}) failed: {}\n{}{}",
                self.scenario,
                self.target,
                out.status,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A minimal INVITE from `from` to `sip:{app}@{to}`.
#[must_use]
pub fn invite(app: &str, from: SocketAddr, to: SocketAddr, id: &str) -> String {
    let host = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    };
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{app}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{from}>;tag=f{id}\r\n\
         To: <sip:{app}@{to}>\r\n\
         Call-ID: {id}@rig\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{from}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        from = host(from),
        to = host(to),
    )
}

/// An OPTIONS ping `id` over UDP from `from` to `to`.
#[must_use]
pub fn options(from: SocketAddr, to: SocketAddr, id: &str) -> String {
    let host = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    };
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag=f{id}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {id}@rig\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        from = host(from),
        to = host(to),
    )
}

/// Sends one datagram from `local` (port chosen by the kernel) inside `ns`
/// and waits up to `wait` for one reply.
#[must_use]
pub fn udp_exchange(
    ns: &Netns,
    local: IpAddr,
    dst: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<String> {
    let sock = ns.enter(|| UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind in netns"));
    sock.set_read_timeout(Some(wait)).expect("timeout");
    sock.send_to(payload, dst).expect("send");
    let mut buf = vec![0u8; 65_535];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The status code of a SIP response text.
#[must_use]
pub fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A trafgen flood of one UDP datagram, `count` times, from a caller to the
/// edge at the highest rate one CPU reaches. Returns how long it took.
pub fn flood(link: &Link, src_port: u16, dst_port: u16, payload: &[u8], count: u64) -> Duration {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (link.v4, link.edge_v4) else {
        unreachable!("rig links have IPv4 addresses")
    };
    let bytes: Vec<String> = payload.iter().map(|b| format!("0x{b:02x}")).collect();
    let cfg = format!(
        "{{\n  eth(da={}, sa={}),\n  ipv4(sa={src}, da={dst}, ttl=64),\n  udp(sp={src_port}, dp={dst_port}),\n  {}\n}}\n",
        link.edge_mac,
        link.mac,
        bytes.join(", ")
    );
    trafgen(link, &cfg, count)
}

/// Sends one datagram from `local` inside `ns` and collects every reply
/// that arrives within `wait` (a 100 Trying and the final response, say).
pub fn udp_replies(
    ns: &Netns,
    local: IpAddr,
    dst: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Vec<String> {
    let sock = ns.enter(|| UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind in netns"));
    sock.send_to(payload, dst).expect("send");
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_535];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        let Ok(n) = sock.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = status(&text) >= 200;
        out.push(text);
        if done {
            break;
        }
    }
    out
}

/// Like [`flood`], with the last two bytes of the IPv4 source drawn at
/// random for every packet: sources spread over `{a}.{b}.0.0/16`.
pub fn flood_spoofed(
    link: &Link,
    net: [u8; 2],
    dst_port: u16,
    payload: &[u8],
    count: u64,
) -> Duration {
    let IpAddr::V4(dst) = link.edge_v4 else {
        unreachable!("rig links have IPv4 addresses")
    };
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("0x{x:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mac = |m: &str| {
        m.split(':')
            .map(|x| format!("0x{x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total = u16::try_from(20 + 8 + payload.len()).expect("fits a datagram");
    let udp_len = u16::try_from(8 + payload.len()).expect("fits a datagram");
    let d = dst.octets();
    // Ethernet, then IPv4 with its checksum computed per packet by trafgen
    // (csumip over bytes 14..33), then UDP without a checksum (allowed).
    let cfg = format!(
        "{{\n  {}, {}, 0x08, 0x00,\n  0x45, 0x00, {}, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, csumip(14, 33),\n  \
         {}, {}, drnd(), drnd(), {},\n  0x13, 0xb0, {}, {}, 0x00, 0x00,\n  {}\n}}\n",
        mac(&link.edge_mac),
        mac(&link.mac),
        hex(&total.to_be_bytes()),
        net[0],
        net[1],
        hex(&d),
        hex(&dst_port.to_be_bytes()),
        hex(&udp_len.to_be_bytes()),
        hex(payload)
    );
    trafgen(link, &cfg, count)
}

/// Runs trafgen with `cfg` from the caller's interface, `count` packets
/// at the highest rate one CPU reaches; returns how long it took.
fn trafgen(link: &Link, cfg: &str, count: u64) -> Duration {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), cfg).expect("write trafgen config");
    let start = Instant::now();
    let first = tx_packets(link);
    // trafgen gives up when the veth queue stays full (EAGAIN on its TX
    // ring); it is started again for what is left, a few times at most.
    for _ in 0..5 {
        let left = count.saturating_sub(tx_packets(link) - first);
        if left * 100 < count {
            break;
        }
        let out = link
            .ns
            .cmd("trafgen")
            .args(["-o", link.dev, "-i"])
            .arg(file.path())
            .args(["-n", &left.to_string(), "--cpus", "1", "-q"])
            .output()
            .expect("start trafgen");
        check_trafgen(&out);
    }
    start.elapsed()
}

/// trafgen's exit status, tolerating one case: when the veth's receive
/// ring stays full, a TX ring flush reports EAGAIN and trafgen stops.
/// Callers count what was really sent with [`tx_packets`].
fn check_trafgen(out: &std::process::Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return;
    }
    assert!(
        text.contains("Flushing TX_RING failed"),
        "trafgen failed: {text}"
    );
    eprintln!("trafgen: the last TX ring flush met a full queue (counted by tx_packets)");
}

/// Packets the caller's interface has sent so far.
pub fn tx_packets(link: &Link) -> u64 {
    let out = link.ns.ip(&["-s", "-j", "link", "show", "dev", link.dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packets")
}

/// An iptables rule in a namespace's OUTPUT chain counting the UDP
/// datagrams (and bytes) that leave it from port 5060 towards `dst` (an
/// address or a network): what the edge really sent, not what it says.
pub struct SentCounter<'a> {
    ns: &'a Netns,
    rule: Vec<String>,
}

impl<'a> SentCounter<'a> {
    #[must_use]
    pub fn new(ns: &'a Netns, dst: &str) -> Self {
        let rule: Vec<String> = [
            "-p",
            "udp",
            "--sport",
            "5060",
            "-d",
            dst,
            "-m",
            "comment",
            "--comment",
            "sipauth-sent",
        ]
        .map(str::to_owned)
        .to_vec();
        crate::netns::sh(ns.cmd("iptables").args(["-w", "-A", "OUTPUT"]).args(&rule));
        Self { ns, rule }
    }

    /// Datagrams and bytes (IP headers included) counted so far.
    #[must_use]
    pub fn read(&self) -> (u64, u64) {
        let out = crate::netns::sh(
            self.ns
                .cmd("iptables")
                .args(["-w", "-L", "OUTPUT", "-v", "-x", "-n"]),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("sipauth-sent"))
            .and_then(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
            .expect("the counting rule")
    }

    /// Datagrams counted so far.
    #[must_use]
    pub fn packets(&self) -> u64 {
        self.read().0
    }
}

impl Drop for SentCounter<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .cmd("iptables")
            .args(["-w", "-D", "OUTPUT"])
            .args(&self.rule)
            .output();
    }
}
