//! Verdicts of the XDP program on crafted frames, through
//! `BPF_PROG_TEST_RUN`: the program is loaded (not attached) with its maps
//! pinned in a private directory.

use std::net::IpAddr;
use std::path::PathBuf;

use aya::TestRun as _;
use aya::programs::TestRunOptions;
use sipauth_agent::edge::lockout::now_ns;
use sipauth_agent::maps::{Xdp, prepare_pin_dir};
use sipauth_common::stats::Reason;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SIP: u16 = 5060;

struct Loaded {
    xdp: Xdp,
    dir: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn load(budget: u32) -> Loaded {
    sipauth_tests::require_root();
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/sipauth-testrun-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    prepare_pin_dir(&dir).expect("pin dir");
    let xdp = Xdp::load(&dir, budget, &[SIP, 5080]).expect("load XDP program");
    Loaded { xdp, dir }
}

fn run(l: &mut Loaded, frame: &[u8]) -> u32 {
    let opts = TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    };
    l.xdp
        .program()
        .test_run(opts)
        .expect("test_run")
        .return_value
}

fn count(l: &Loaded, reason: Reason) -> u64 {
    l.xdp
        .stats()
        .expect("stats")
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

fn lock(l: &Loaded, ip: &str) {
    let until = now_ns() + 60 * 1_000_000_000;
    l.xdp.lockout_set(ip.parse().unwrap(), until).unwrap();
}

// --- frame builders ---

const SRC4: &str = "192.0.2.10";
const SRC6: &str = "2001:db8::10";

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn l4(proto: u8, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        h.extend_from_slice(&[0, 8 + 6, 0, 0]);
        h.extend_from_slice(b"INVITE");
    }
    h
}

fn ipv4(src: &str, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let IpAddr::V4(src) = src.parse().unwrap() else {
        unreachable!()
    };
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&u16::try_from(20 + payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(payload);
    h
}

fn ipv6(src: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let IpAddr::V6(src) = src.parse().unwrap() else {
        unreachable!()
    };
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(payload);
    h
}

fn frame4(src: &str, proto: u8, dport: u16) -> Vec<u8> {
    [eth(0x0800), ipv4(src, proto, 0, &l4(proto, dport))].concat()
}

fn frame6(src: &str, proto: u8, dport: u16) -> Vec<u8> {
    [eth(0x86dd), ipv6(src, proto, &l4(proto, dport))].concat()
}

// --- tests ---

#[test]
fn good_standing_passes() {
    let mut l = load(0);
    assert_eq!(run(&mut l, &frame4(SRC4, 17, SIP)), XDP_PASS);
    assert_eq!(run(&mut l, &frame6(SRC6, 6, SIP)), XDP_PASS);
    assert_eq!(count(&l, Reason::Allowed), 2);
}

#[test]
fn locked_out_is_dropped_on_every_sip_port_and_transport() {
    let mut l = load(0);
    lock(&l, SRC4);
    lock(&l, SRC6);
    for frame in [
        frame4(SRC4, 17, SIP),
        frame4(SRC4, 6, SIP),
        frame4(SRC4, 17, 5080),
        frame6(SRC6, 17, SIP),
        frame6(SRC6, 6, 5080),
    ] {
        assert_eq!(run(&mut l, &frame), XDP_DROP);
    }
    assert_eq!(count(&l, Reason::LockedDrop), 5);
}

#[test]
fn budget_lets_a_few_through_per_second() {
    let mut l = load(3);
    lock(&l, SRC4);
    let verdicts: Vec<u32> = (0..10)
        .map(|_| run(&mut l, &frame4(SRC4, 17, SIP)))
        .collect();
    // The ten runs take far less than a second; a second boundary at most
    // refills the budget once.
    let passed = verdicts.iter().filter(|&&v| v == XDP_PASS).count();
    assert!((3..=6).contains(&passed), "{verdicts:?}");
    assert_eq!(count(&l, Reason::LockedBudget), passed as u64);
    assert_eq!(count(&l, Reason::LockedDrop), 10 - passed as u64);
}

#[test]
fn expired_and_lifted_lockouts_pass() {
    let mut l = load(0);
    let ip: IpAddr = SRC4.parse().unwrap();
    l.xdp.lockout_set(ip, now_ns() - 1).unwrap();
    assert_eq!(run(&mut l, &frame4(SRC4, 17, SIP)), XDP_PASS);
    lock(&l, SRC4);
    assert_eq!(run(&mut l, &frame4(SRC4, 17, SIP)), XDP_DROP);
    assert!(l.xdp.lockout_remove(ip).unwrap());
    assert_eq!(run(&mut l, &frame4(SRC4, 17, SIP)), XDP_PASS);
}

#[test]
fn other_ports_protocols_and_frames_are_untouched() {
    let mut l = load(0);
    lock(&l, SRC4);
    lock(&l, SRC6);
    // Another UDP port, ICMP, ARP, IPv6 ICMP.
    assert_eq!(run(&mut l, &frame4(SRC4, 17, 5099)), XDP_PASS);
    assert_eq!(
        run(
            &mut l,
            &[eth(0x0800), ipv4(SRC4, 1, 0, &[8, 0, 0, 0, 0, 0, 0, 0])].concat()
        ),
        XDP_PASS
    );
    assert_eq!(run(&mut l, &[eth(0x0806), vec![0; 28]].concat()), XDP_PASS);
    assert_eq!(
        run(
            &mut l,
            &[eth(0x86dd), ipv6(SRC6, 58, &[135, 0, 0, 0, 0, 0, 0, 0])].concat()
        ),
        XDP_PASS
    );
    assert_eq!(count(&l, Reason::NotSip), 3);
    assert_eq!(count(&l, Reason::NotIp), 1);
    assert_eq!(count(&l, Reason::LockedDrop), 0);
}

#[test]
fn vlan_tag_and_ipv6_extension_headers_are_walked() {
    let mut l = load(0);
    lock(&l, SRC4);
    lock(&l, SRC6);
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0, 42, 0x08, 0x00]);
    tagged.extend(ipv4(SRC4, 17, 0, &l4(17, SIP)));
    assert_eq!(run(&mut l, &tagged), XDP_DROP);
    // Hop-by-hop options (8 bytes) then UDP.
    let mut ext = vec![17, 0, 1, 4, 0, 0, 0, 0];
    ext.extend(l4(17, SIP));
    assert_eq!(
        run(&mut l, &[eth(0x86dd), ipv6(SRC6, 0, &ext)].concat()),
        XDP_DROP
    );
}

#[test]
fn later_fragments_pass_first_fragment_is_judged() {
    let mut l = load(0);
    lock(&l, SRC4);
    // More-fragments set, offset 0: carries the ports.
    let first = [eth(0x0800), ipv4(SRC4, 17, 0x2000, &l4(17, SIP))].concat();
    assert_eq!(run(&mut l, &first), XDP_DROP);
    // Offset 185 (x8 bytes): no ports.
    let later = [eth(0x0800), ipv4(SRC4, 17, 185, b"rest of the INVITE")].concat();
    assert_eq!(run(&mut l, &later), XDP_PASS);
}

#[test]
fn truncated_and_malformed_headers_pass_as_malformed() {
    let mut l = load(0);
    lock(&l, SRC4);
    let full = frame4(SRC4, 17, SIP);
    // Ethernet only; IPv4 cut short; UDP ports cut off.
    for len in [14, 20, 14 + 19, 14 + 20 + 3] {
        assert_eq!(run(&mut l, &full[..len]), XDP_PASS, "cut at {len}");
    }
    // IHL below 5, and IHL pointing beyond the frame.
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(run(&mut l, &bad_ihl), XDP_PASS);
    let mut long_ihl = full.clone();
    long_ihl[14] = 0x4f;
    assert_eq!(run(&mut l, &long_ihl), XDP_PASS);
    // A VLAN tag with nothing after it; IPv6 cut inside the addresses.
    assert_eq!(run(&mut l, &[eth(0x8100), vec![0, 1]].concat()), XDP_PASS);
    assert_eq!(run(&mut l, &frame6(SRC6, 17, SIP)[..30]), XDP_PASS);
    assert_eq!(count(&l, Reason::Malformed), 8);
    assert_eq!(count(&l, Reason::LockedDrop), 0);
}

#[test]
fn verifier_accepts_and_cost_is_reported() {
    let mut l = load(0);
    lock(&l, SRC4);
    let frame = frame4(SRC4, 17, SIP);
    let opts = TestRunOptions {
        data_in: Some(&frame),
        repeat: 100_000,
        ..Default::default()
    };
    let r = l.xdp.program().test_run(opts).expect("test_run");
    assert_eq!(r.return_value, XDP_DROP);
    let info = l.xdp.program().info().expect("program info");
    eprintln!(
        "verified instructions: {:?}, ns per locked-out packet: {:?}",
        info.verified_instruction_count(),
        r.duration
    );
}
