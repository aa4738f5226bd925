//! Call setup latency from packet timestamps: tcpdump on the caller's
//! interface (in its namespace, on the load CPU) writes every SIP packet
//! with the kernel's nanosecond timestamp; a setup runs from the first
//! INVITE of a Call-ID leaving the caller to the first final response of
//! that Call-ID other than a challenge (401, 407) reaching it. sipp's own
//! response times are whole milliseconds, read off a 4 ms clock here.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use sipauth_tests::topo::Link;

use crate::{LOAD_CPU, percentile};

/// Bytes kept of each packet: the start line and the headers before the
/// Call-ID and CSeq fit (a full INVITE with credentials is ~900 bytes).
const SNAPLEN: &str = "1500";

/// A running capture; [`Capture::finish`] stops it and reads the file.
pub(crate) struct Capture {
    child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Setup times measured on the wire, in ms (sorted), and what the
/// capture missed.
pub(crate) struct Wire {
    pub(crate) setup_ms: Vec<f64>,
    /// Where the challenged setups' time went.
    pub(crate) pieces: Pieces,
    /// Packets the kernel dropped before tcpdump read them: when not 0,
    /// some setups were not measured (never wrongly measured: a setup
    /// needs both of its packets).
    pub(crate) dropped: u64,
}

impl Capture {
    /// Starts tcpdump on `caller`'s interface, UDP port 5060, and
    /// waits until it listens.
    pub(crate) fn start(caller: &Link) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sip.pcap");
        let mut child = caller
            .ns
            .cmd("taskset")
            .args([
                "-c", LOAD_CPU, "tcpdump", "-i", caller.dev, "-n", "-s", SNAPLEN,
            ])
            .args(["-B", "32768", "--time-stamp-precision=nano", "-w"])
            .arg(&file)
            .args(["udp", "port", "5060"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (cargo xtask setup installs it)");
        let mut err = BufReader::new(child.stderr.take().expect("tcpdump stderr"));
        let mut line = String::new();
        while err.read_line(&mut line).expect("tcpdump stderr") > 0 {
            if line.contains("listening on") {
                break;
            }
            line.clear();
        }
        assert!(line.contains("listening on"), "tcpdump did not start");
        // The rest of stderr (the counts at exit) is read by `finish`.
        child.stderr = Some(err.into_inner());
        Self {
            child,
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump (SIGINT: it flushes its file) and measures the setups.
    pub(crate) fn finish(self) -> Wire {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0))
            .expect("tcpdump pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let out = self.child.wait_with_output().expect("tcpdump exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let dropped = stderr
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let pcap = std::fs::read(&self.file).unwrap_or_default();
        let (mut setup_ms, mut pieces) = setups(&pcap);
        setup_ms.sort_by(f64::total_cmp);
        for v in [
            &mut pieces.challenge,
            &mut pieces.caller,
            &mut pieces.after_credentials,
        ] {
            v.sort_by(f64::total_cmp);
        }
        Wire {
            setup_ms,
            pieces,
            dropped,
        }
    }
}

/// The three parts of a challenged setup, in ms, each call's in its own
/// list: the server's challenge (first INVITE leaving the caller to the
/// 401/407 reaching it), the caller's answer to it (to the INVITE with
/// credentials leaving), and the server's work after the credentials (to
/// the final response reaching the caller: for sipauth the answer_url's
/// round trip and the 603). The first and last are the server's (and
/// the link's); the middle one is sipp's.
#[derive(Default)]
pub(crate) struct Pieces {
    pub(crate) challenge: Vec<f64>,
    pub(crate) caller: Vec<f64>,
    pub(crate) after_credentials: Vec<f64>,
}

impl Pieces {
    /// p50 and p99 of each part, in ms, and how many setups they are of.
    pub(crate) fn json(&self) -> serde_json::Value {
        let at =
            |v: &[f64]| serde_json::json!({"p50": percentile(v, 50), "p99": percentile(v, 99)});
        serde_json::json!({
            "setups": self.challenge.len(),
            "server_challenge": at(&self.challenge),
            "caller_answers_challenge": at(&self.caller),
            "server_after_credentials": at(&self.after_credentials),
        })
    }
}

/// A SIP packet's time (ns), Call-ID, and whether it is an INVITE request,
/// a challenge, or a final non-challenge response.
#[derive(Debug, PartialEq)]
enum Mark<'a> {
    Invite(&'a str),
    Challenge(&'a str),
    Final(&'a str),
    Other,
}

/// A setup under way: when its first INVITE left, its challenge came
/// back, and the INVITE after the challenge left (ns).
#[derive(Default)]
struct Started {
    invite: u64,
    challenge: Option<u64>,
    credentials: Option<u64>,
}

/// Setup times (ms) of the calls in a pcap file (Ethernet, nanosecond or
/// microsecond timestamps), and the parts of those challenged once.
fn setups(pcap: &[u8]) -> (Vec<f64>, Pieces) {
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    let mut started: HashMap<&str, Started> = HashMap::new();
    let mut done = Vec::new();
    let mut pieces = Pieces::default();
    for (t, payload) in packets(pcap) {
        match mark(payload) {
            Mark::Invite(id) => {
                let s = started.entry(id).or_insert(Started {
                    invite: t,
                    ..Started::default()
                });
                if s.challenge.is_some() && s.credentials.is_none() {
                    s.credentials = Some(t);
                }
            }
            Mark::Challenge(id) => {
                if let Some(s) = started.get_mut(id) {
                    s.challenge.get_or_insert(t);
                }
            }
            Mark::Final(id) => {
                if let Some(s) = started.remove(id) {
                    done.push(ms(s.invite, t));
                    if let (Some(c), Some(i)) = (s.challenge, s.credentials) {
                        pieces.challenge.push(ms(s.invite, c));
                        pieces.caller.push(ms(c, i));
                        pieces.after_credentials.push(ms(i, t));
                    }
                }
            }
            Mark::Other => {}
        }
    }
    (done, pieces)
}

/// Each UDP payload of an Ethernet pcap file, with its timestamp in ns.
fn packets(pcap: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (nanos, ok) = match pcap.get(..4).map(|m| u32_at(m, 0)) {
        Some(0xa1b2_3c4d) => (true, true),
        Some(0xa1b2_c3d4) => (false, true),
        _ => (false, false),
    };
    let ethernet = ok && pcap.len() >= 24 && u32_at(pcap, 20) == 1;
    let mut at = if ethernet { 24 } else { pcap.len() };
    std::iter::from_fn(move || {
        loop {
            let head = pcap.get(at..at + 16)?;
            let (sec, frac, len) = (u32_at(head, 0), u32_at(head, 4), u32_at(head, 8) as usize);
            let frame = pcap.get(at + 16..at + 16 + len)?;
            at += 16 + len;
            let t =
                u64::from(sec) * 1_000_000_000 + u64::from(frac) * if nanos { 1 } else { 1_000 };
            if let Some(payload) = udp_payload(frame) {
                return Some((t, payload));
            }
        }
    })
}

/// The UDP payload of an Ethernet frame carrying IPv4 or IPv6.
fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    let ip = frame.get(14..)?;
    let udp = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 if ip.get(9) == Some(&17) => ip.get(usize::from(ip[0] & 0x0f) * 4..)?,
        0x86dd if ip.get(6) == Some(&17) => ip.get(40..)?,
        _ => return None,
    };
    udp.get(8..)
}

/// What a SIP packet is to a setup (headers read by name, long or compact).
fn mark(payload: &[u8]) -> Mark<'_> {
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&payload[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let call_id = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("Call-ID") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim())
    });
    let Some(id) = call_id else {
        return Mark::Other;
    };
    if start.starts_with("INVITE ") {
        return Mark::Invite(id);
    }
    let status = start
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3)?.parse::<u16>().ok());
    match status {
        Some(401 | 407) => Mark::Challenge(id),
        Some(s) if s >= 200 => Mark::Final(id),
        _ => Mark::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file (nanosecond) of Ethernet/IPv4/UDP frames.
    fn pcap(frames: &[(u64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [0xa1b2_3c4d_u32, 0x0004_0002, 0, 0, 65_535, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(24);
        for &(t, sip) in frames {
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
            ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 0]);
            frame.extend_from_slice(sip.as_bytes());
            for v in [
                u32::try_from(t / 1_000_000_000).unwrap(),
                u32::try_from(t % 1_000_000_000).unwrap(),
                u32::try_from(frame.len()).unwrap(),
                u32::try_from(frame.len()).unwrap(),
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn a_setup_runs_from_the_first_invite_to_the_final_answer() {
        let file = pcap(&[
            (
                1_000_000_000,
                "INVITE sip:a@x SIP/2.0\r\nCall-ID: c1\r\n\r\n",
            ),
            (
                1_000_100_000,
                "SIP/2.0 407 Proxy Authentication Required\r\nCall-ID: c1\r\n\r\n",
            ),
            (1_000_150_000, "ACK sip:a@x SIP/2.0\r\nCall-ID: c1\r\n\r\n"),
            (1_000_200_000, "INVITE sip:a@x SIP/2.0\r\ni: c2\r\n\r\n"),
            (
                1_000_300_000,
                "INVITE sip:a@x SIP/2.0\r\nCall-ID: c1\r\n\r\n",
            ),
            (1_000_400_000, "SIP/2.0 100 Trying\r\nCall-ID: c1\r\n\r\n"),
            (1_001_250_000, "SIP/2.0 603 Decline\r\nCall-ID: c1\r\n\r\n"),
            (1_001_300_000, "SIP/2.0 603 Decline\r\nCall-ID: c1\r\n\r\n"),
        ]);
        let (got, pieces) = setups(&file);
        assert_eq!(
            got.len(),
            1,
            "c2 never ended; the repeated 603 is no new setup"
        );
        assert!((got[0] - 1.25).abs() < 1e-9, "{got:?}");
        let one = |v: &[f64]| {
            assert_eq!(v.len(), 1, "{v:?}");
            v[0]
        };
        assert!((one(&pieces.challenge) - 0.1).abs() < 1e-9);
        assert!((one(&pieces.caller) - 0.2).abs() < 1e-9);
        assert!((one(&pieces.after_credentials) - 0.95).abs() < 1e-9);
    }

    #[test]
    fn a_setup_without_a_challenge_has_no_parts() {
        let file = pcap(&[
            (1_000, "INVITE sip:a@x SIP/2.0\r\nCall-ID: c1\r\n\r\n"),
            (5_000, "SIP/2.0 403 Forbidden\r\nCall-ID: c1\r\n\r\n"),
        ]);
        let (got, pieces) = setups(&file);
        assert_eq!(got.len(), 1);
        assert!(pieces.challenge.is_empty() && pieces.after_credentials.is_empty());
    }

    #[test]
    fn anything_else_is_no_packet() {
        assert_eq!(setups(b"not a pcap file").0, Vec::<f64>::new());
        assert_eq!(mark(b"SIP/2.0 200 OK\r\n\r\n"), Mark::Other);
        assert_eq!(mark(b"\xff\xfe"), Mark::Other);
    }
}
