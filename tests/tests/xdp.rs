//! Verdicts of the XDP program on crafted frames, through
//! `BPF_PROG_TEST_RUN`: the program is loaded (not attached) with its maps
//! pinned in a private directory.

use std::net::IpAddr;
use std::path::PathBuf;

use aya::TestRun as _;
use aya::programs::TestRunOptions;
use sipauth_common::stats::Reason;
use sipauth_common::{acl, fnv};
use sipauth_kernel::lockout::now_ns;
use sipauth_kernel::maps::{LockoutPolicy, Xdp, prepare_pin_dir};
use sipauth_model::snapshot::{Acl, Application, AuthType, Snapshot};

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
    sipauth_tests::sweep_pins();
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/sipauth-testrun-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    prepare_pin_dir(&dir).expect("pin dir");
    let xdp =
        Xdp::load(&dir, budget, &[SIP, 5080], &LockoutPolicy::default()).expect("load XDP program");
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

/// UDP to `dport` carrying `payload`.
fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A SIP request over UDP to port 5060 from `src` (IPv4 or IPv6 text).
fn sip_frame(src: &str, payload: &[u8]) -> Vec<u8> {
    let l4 = udp(SIP, payload);
    match src.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => [eth(0x0800), ipv4(src, 17, 0, &l4)].concat(),
        IpAddr::V6(_) => [eth(0x86dd), ipv6(src, 17, &l4)].concat(),
    }
}

fn invite(app: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{app}@sip.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\nTo: <sip:{app}@sip.example.com>\r\n\
         From: <sip:caller@example.net>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite_from(src: &str, app: &str) -> Vec<u8> {
    sip_frame(src, &invite(app))
}

// --- snapshots ---

/// Applications: 1001 (ip_acl, office), 1002 (ip_acl_and_credential,
/// pbx), 1003 (credential), 1004 (no auth). ACLs: office is a /24, an IPv6
/// /48 and nothing else; pbx is a single /32 inside office's /24.
const APP_OFFICE: &str = "1001";
const APP_PBX: &str = "1002";
const APP_CREDENTIAL: &str = "1003";
const APP_OPEN: &str = "1004";

fn app(app_id: &str, sip_auth_type: AuthType, acl: Option<&str>) -> Application {
    Application {
        app_id: app_id.to_owned(),
        account: "MA1".to_owned(),
        answer_url: "https://example.com/answer".to_owned(),
        answer_method: "POST".to_owned(),
        hangup_url: None,
        hangup_method: "POST".to_owned(),
        sip_auth_type,
        credential_uuid: None,
        ip_acl_uuid: acl.map(str::to_owned),
        challenge_algorithms: Vec::new(),
    }
}

fn acl_of(uuid: &str, entries: &[&str]) -> Acl {
    Acl {
        uuid: uuid.to_owned(),
        account: "MA1".to_owned(),
        entries: entries.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

fn snapshot(office: &[&str]) -> Snapshot {
    Snapshot {
        version: 1,
        applications: vec![
            app(APP_OFFICE, AuthType::IpAcl, Some("acl-office")),
            app(APP_PBX, AuthType::IpAclAndCredential, Some("acl-pbx")),
            app(APP_CREDENTIAL, AuthType::Credential, Some("acl-office")),
            app(APP_OPEN, AuthType::None, None),
        ],
        acls: vec![
            acl_of("acl-office", office),
            acl_of("acl-pbx", &["198.51.100.7/32"]),
        ],
        ..Default::default()
    }
}

const OFFICE: &[&str] = &["198.51.100.0/24", "2001:db8:a::/48"];

fn load_with_acls(budget: u32) -> Loaded {
    let l = load(budget);
    l.xdp
        .sync_snapshot(&snapshot(OFFICE))
        .expect("sync snapshot");
    l
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
fn invite_from_inside_the_acl_passes() {
    let mut l = load_with_acls(0);
    // Longest prefix: office's /24 and pbx's /32 share addresses, but each
    // ACL only ever matches its own entries.
    for (src, app) in [
        ("198.51.100.9", APP_OFFICE),
        ("198.51.100.7", APP_OFFICE),
        ("198.51.100.7", APP_PBX),
        ("2001:db8:a:1::5", APP_OFFICE),
        // IPv4-mapped in an IPv6 header: the IPv4 trie.
        ("::ffff:198.51.100.9", APP_OFFICE),
        ("::ffff:198.51.100.7", APP_PBX),
    ] {
        assert_eq!(
            run(&mut l, &invite_from(src, app)),
            XDP_PASS,
            "{src} -> {app}"
        );
    }
    // sips: and an upper-case scheme name the same application.
    let sips = b"INVITE sips:1001@sip.example.com SIP/2.0\r\n\r\n";
    assert_eq!(run(&mut l, &sip_frame("198.51.100.9", sips)), XDP_PASS);
    let upper = b"INVITE SIP:1001;user=phone@sip.example.com SIP/2.0\r\n\r\n";
    assert_eq!(run(&mut l, &sip_frame("198.51.100.9", upper)), XDP_PASS);
    assert_eq!(count(&l, Reason::Allowed), 8);
    assert_eq!(count(&l, Reason::AclDenied), 0);

    // The same sources, each outside the other ACL.
    for (src, app) in [
        ("198.51.100.9", APP_PBX),
        ("::ffff:198.51.100.9", APP_PBX),
        ("2001:db8:a:1::5", APP_PBX),
        ("198.51.101.9", APP_OFFICE),
        ("2001:db8:b::5", APP_OFFICE),
        // An IPv6 source that embeds an allowed IPv4 address without being
        // IPv4-mapped is not matched by IPv4 entries.
        ("2001:db8::c633:6409", APP_OFFICE),
        ("::198.51.100.9", APP_OFFICE),
    ] {
        assert_eq!(
            run(&mut l, &invite_from(src, app)),
            XDP_DROP,
            "{src} -> {app}"
        );
    }
    assert_eq!(count(&l, Reason::AclDenied), 7);
}

#[test]
fn invite_from_outside_is_dropped_beyond_the_budget() {
    let mut l = load_with_acls(3);
    let verdicts: Vec<u32> = (0..8)
        .map(|i| {
            run(
                &mut l,
                &invite_from(&format!("203.0.113.{}", i + 1), APP_OFFICE),
            )
        })
        .collect();
    let passed = verdicts.iter().filter(|&&v| v == XDP_PASS).count();
    assert!((3..=6).contains(&passed), "{verdicts:?}");
    assert_eq!(count(&l, Reason::AclDeniedBudget), passed as u64);
    assert_eq!(count(&l, Reason::AclDenied), 8 - passed as u64);
    assert_eq!(count(&l, Reason::Allowed), 0);
    // Only the dropped ones are counted here: user space counts the rest.
    let counted: u32 = (0..8)
        .map(|i| {
            let ip = format!("203.0.113.{}", i + 1).parse().unwrap();
            l.xdp.failure_count(ip).unwrap()
        })
        .sum();
    assert_eq!(counted as usize, 8 - passed);
}

#[test]
fn ten_denials_within_the_window_lock_the_source_out() {
    let mut l = load_with_acls(0);
    let src = "203.0.113.50";
    let ip: IpAddr = src.parse().unwrap();
    for i in 1..=9 {
        assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
        assert_eq!(l.xdp.failure_count(ip).unwrap(), i);
        assert_eq!(l.xdp.lockout_get(ip).unwrap(), None);
    }
    let before = now_ns();
    assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    let until = l.xdp.lockout_get(ip).unwrap().expect("locked out");
    let lockout = until - before;
    assert!(
        (59_000_000_000..=61_000_000_000).contains(&lockout),
        "{lockout} ns"
    );
    assert_eq!(count(&l, Reason::AclDenied), 10);
    // Counting restarts after a lockout.
    assert_eq!(l.xdp.failure_count(ip).unwrap(), 0);

    // Now the lockout rule drops everything from it, even an INVITE to an
    // application it would be allowed to reach, and does not count more.
    assert_eq!(run(&mut l, &invite_from(src, APP_OPEN)), XDP_DROP);
    assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    assert_eq!(count(&l, Reason::LockedDrop), 2);
    assert_eq!(count(&l, Reason::AclDenied), 10);
    assert_eq!(l.xdp.lockout_get(ip).unwrap(), Some(until));
    // Another source is not affected.
    assert_eq!(
        run(&mut l, &invite_from("198.51.100.9", APP_OFFICE)),
        XDP_PASS
    );
}

#[test]
fn lockout_policy_comes_from_the_settings_map() {
    let mut l = load_with_acls(0);
    l.xdp
        .set_lockout_policy(&LockoutPolicy::new(3, 60, 5, 64).unwrap())
        .unwrap();
    let src = "203.0.113.51";
    let ip: IpAddr = src.parse().unwrap();
    for _ in 0..3 {
        assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    }
    let until = l.xdp.lockout_get(ip).unwrap().expect("locked out");
    assert!(until - now_ns() <= 5_000_000_000);
    // A threshold out of reach counts but does not lock.
    l.xdp
        .set_lockout_policy(&LockoutPolicy::new(u32::MAX, 60, 60, 64).unwrap())
        .unwrap();
    let src = "203.0.113.52";
    for _ in 0..20 {
        assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    }
    let ip: IpAddr = src.parse().unwrap();
    assert_eq!(l.xdp.lockout_get(ip).unwrap(), None);
    assert_eq!(l.xdp.failure_count(ip).unwrap(), 20);
}

#[test]
fn invite_to_an_app_without_acl_or_unknown_passes() {
    let mut l = load_with_acls(0);
    let outside = "203.0.113.60";
    for app in [APP_CREDENTIAL, APP_OPEN, "9999", "10011", "100"] {
        assert_eq!(run(&mut l, &invite_from(outside, app)), XDP_PASS, "{app}");
    }
    assert_eq!(count(&l, Reason::Allowed), 5);
    assert_eq!(l.xdp.failure_count(outside.parse().unwrap()).unwrap(), 0);
}

#[test]
fn other_methods_and_tcp_pass() {
    let mut l = load_with_acls(0);
    let outside = "203.0.113.61";
    for method in ["OPTIONS", "REGISTER", "ACK", "BYE", "invite", "INVITEX"] {
        let p = format!("{method} sip:1001@sip.example.com SIP/2.0\r\n\r\n");
        assert_eq!(
            run(&mut l, &sip_frame(outside, p.as_bytes())),
            XDP_PASS,
            "{method}"
        );
    }
    // A response whose text happens to follow.
    let p = b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE sip:1001@x\r\n\r\n";
    assert_eq!(run(&mut l, &sip_frame(outside, p)), XDP_PASS);
    // INVITE over TCP: left to user space.
    let mut tcp = l4(6, SIP);
    tcp.extend_from_slice(&invite(APP_OFFICE));
    assert_eq!(
        run(&mut l, &[eth(0x0800), ipv4(outside, 6, 0, &tcp)].concat()),
        XDP_PASS
    );
    // Another UDP port.
    let other = [
        eth(0x0800),
        ipv4(outside, 17, 0, &udp(5099, &invite(APP_OFFICE))),
    ]
    .concat();
    assert_eq!(run(&mut l, &other), XDP_PASS);
    assert_eq!(count(&l, Reason::AclDenied), 0);
    assert_eq!(count(&l, Reason::AclDeniedBudget), 0);
}

#[test]
fn truncated_and_garbage_payloads_pass() {
    let mut l = load_with_acls(0);
    let outside = "203.0.113.62";
    let long_user = format!("INVITE sip:{}@x SIP/2.0\r\n", "1".repeat(65));
    let full = invite(APP_OFFICE);
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"INVITE".to_vec(),
        b"INVITE ".to_vec(),
        b"INVITE sip".to_vec(),
        b"INVITE sip:".to_vec(),
        // The user part runs into the end of the packet.
        b"INVITE sip:1001".to_vec(),
        full[..15].to_vec(),
        b"INVITE sip:@sip.example.com SIP/2.0\r\n".to_vec(),
        b"INVITE tel:1001@x SIP/2.0\r\n".to_vec(),
        b"INVITE sipx:1001@x SIP/2.0\r\n".to_vec(),
        b"INVITE  sip:1001@x SIP/2.0\r\n".to_vec(),
        long_user.into_bytes(),
        (0..=255u8).collect(),
        vec![0xff; 200],
    ];
    for p in &payloads {
        assert_eq!(
            run(&mut l, &sip_frame(outside, p)),
            XDP_PASS,
            "{:?}",
            String::from_utf8_lossy(p)
        );
    }
    // UDP header itself cut short.
    let cut = sip_frame(outside, &full);
    assert_eq!(run(&mut l, &cut[..14 + 20 + 6]), XDP_PASS);
    assert_eq!(count(&l, Reason::AclDenied), 0);
    assert_eq!(l.xdp.failure_count(outside.parse().unwrap()).unwrap(), 0);
    // The full INVITE from the same source is denied: the cases above
    // passed for what they are, not because the ACL was missing.
    assert_eq!(run(&mut l, &sip_frame(outside, &full)), XDP_DROP);
}

#[test]
fn user_space_failures_share_the_counter() {
    let mut l = load_with_acls(0);
    let src = "203.0.113.70";
    let ip: IpAddr = src.parse().unwrap();
    for _ in 0..5 {
        assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    }
    assert_eq!(l.xdp.failure_count(ip).unwrap(), 5);
    for i in 6..10 {
        assert_eq!(l.xdp.record_failure(ip).unwrap(), None);
        assert_eq!(l.xdp.failure_count(ip).unwrap(), i);
    }
    let before = now_ns();
    let until = l
        .xdp
        .record_failure(ip)
        .unwrap()
        .expect("the 10th failure locks");
    assert!(until > before + 59_000_000_000, "{until} vs {before}");
    assert_eq!(l.xdp.lockout_get(ip).unwrap(), Some(until));
    assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
    assert_eq!(count(&l, Reason::LockedDrop), 1);
    // During the lockout further failures neither count nor extend it.
    assert_eq!(l.xdp.record_failure(ip).unwrap(), None);
    assert_eq!(l.xdp.lockout_get(ip).unwrap(), Some(until));
    assert_eq!(l.xdp.failure_count(ip).unwrap(), 0);

    // IPv6, and IPv4-mapped written either way is one source.
    let v6: IpAddr = "2001:db8:ff::1".parse().unwrap();
    assert_eq!(l.xdp.record_failure(v6).unwrap(), None);
    assert_eq!(l.xdp.failure_count(v6).unwrap(), 1);
    let mapped: IpAddr = "::ffff:203.0.113.71".parse().unwrap();
    l.xdp.record_failure(mapped).unwrap();
    l.xdp
        .record_failure("203.0.113.71".parse().unwrap())
        .unwrap();
    assert_eq!(l.xdp.failure_count(mapped).unwrap(), 2);
}

#[test]
fn concurrent_failures_from_both_sides_are_all_counted() {
    let l = load_with_acls(0);
    // No lockout, so every failure stays in the count.
    l.xdp
        .set_lockout_policy(&LockoutPolicy::new(u32::MAX, 3600, 60, 64).unwrap())
        .unwrap();
    let src = "203.0.113.80";
    let ip: IpAddr = src.parse().unwrap();
    let frame = invite_from(src, APP_OFFICE);
    let xdp = &l.xdp;
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..500 {
                    xdp.record_failure(ip).unwrap();
                }
            });
        }
        s.spawn(|| {
            let program = xdp.packet_program();
            let r = program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    repeat: 1500,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.return_value, XDP_DROP);
        });
    });
    assert_eq!(l.xdp.failure_count(ip).unwrap(), 3000);
}

#[test]
fn sync_replaces_the_acl_and_removes_the_old_generation() {
    let mut l = load_with_acls(0);
    let first = l.xdp.acl_view().unwrap();
    assert_eq!(
        run(&mut l, &invite_from("198.51.100.9", APP_OFFICE)),
        XDP_PASS
    );
    assert_eq!(
        run(&mut l, &invite_from("192.0.2.200", APP_OFFICE)),
        XDP_DROP
    );

    // The office moves: a new /24 and a single IPv6 address.
    let mut next = snapshot(&["192.0.2.0/24", "2001:db8:c::1/128"]);
    next.version = 2;
    l.xdp.sync_snapshot(&next).unwrap();
    assert_eq!(
        run(&mut l, &invite_from("198.51.100.9", APP_OFFICE)),
        XDP_DROP
    );
    assert_eq!(
        run(&mut l, &invite_from("2001:db8:a::5", APP_OFFICE)),
        XDP_DROP
    );
    assert_eq!(
        run(&mut l, &invite_from("192.0.2.200", APP_OFFICE)),
        XDP_PASS
    );
    assert_eq!(
        run(&mut l, &invite_from("2001:db8:c::1", APP_OFFICE)),
        XDP_PASS
    );
    assert_eq!(
        run(&mut l, &invite_from("2001:db8:c::2", APP_OFFICE)),
        XDP_DROP
    );
    // The pbx ACL did not change and still works.
    assert_eq!(run(&mut l, &invite_from("198.51.100.7", APP_PBX)), XDP_PASS);

    // Only the live generation is left, and it holds exactly the new set.
    let view = l.xdp.acl_view().unwrap();
    assert_ne!(view.generation, first.generation);
    let g = view.generation;
    assert_eq!(view.apps.len(), 2, "{view:?}");
    assert!(view.apps.iter().all(|(k, _)| k.generation == g));
    let office = acl::wire_id(l.xdp.acl_id("acl-office").unwrap(), g);
    let pbx = acl::wire_id(l.xdp.acl_id("acl-pbx").unwrap(), g);
    let app_acl = |id: &str| {
        let hash = fnv::hash(id.as_bytes());
        view.apps
            .iter()
            .find(|(k, _)| k.hash == hash)
            .map(|(_, v)| v.acl_id)
    };
    assert_eq!(app_acl(APP_OFFICE), Some(office));
    assert_eq!(app_acl(APP_PBX), Some(pbx));
    assert_eq!(app_acl(APP_CREDENTIAL), None);
    let mut v4 = view.v4.clone();
    v4.sort();
    assert_eq!(
        v4,
        vec![
            (office, "192.0.2.0/24".parse().unwrap()),
            (pbx, "198.51.100.7/32".parse().unwrap())
        ]
    );
    assert_eq!(
        view.v6,
        vec![(office, "2001:db8:c::1/128".parse().unwrap())]
    );

    // Taking the ACL away from the application lets everything through.
    let mut open = next.clone();
    open.applications[0].sip_auth_type = AuthType::Credential;
    l.xdp.sync_snapshot(&open).unwrap();
    assert_eq!(
        run(&mut l, &invite_from("198.51.100.9", APP_OFFICE)),
        XDP_PASS
    );
    let view = l.xdp.acl_view().unwrap();
    assert_eq!(view.apps.len(), 1);
    assert_eq!(view.v4.len(), 1);
    assert!(view.v6.is_empty());
}

#[test]
fn a_reloaded_agent_keeps_enforcing_the_pinned_generation() {
    let mut l = load_with_acls(0);
    l.xdp.sync_snapshot(&snapshot(OFFICE)).unwrap();
    let generation = l.xdp.settings().generation;
    let mut again = Xdp::load(&l.dir, 0, &[SIP], &LockoutPolicy::default()).unwrap();
    assert_eq!(again.settings().generation, generation);
    let frame = invite_from("203.0.113.90", APP_OFFICE);
    let r = again
        .program()
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.return_value, XDP_DROP);
    // Its first sync writes the other generation with its own ids.
    again.sync_snapshot(&snapshot(&["203.0.113.0/24"])).unwrap();
    let view = again.acl_view().unwrap();
    assert_ne!(view.generation, generation);
    assert!(
        view.apps
            .iter()
            .all(|(k, _)| k.generation == view.generation)
    );
    assert!(
        view.v4
            .iter()
            .all(|(id, _)| acl::generation_of(*id) == view.generation)
    );
    assert_eq!(run(&mut l, &frame), XDP_PASS);
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

#[test]
fn acl_gated_invite_cost_is_reported() {
    let mut l = load_with_acls(0);
    for (what, frame) in [
        (
            "IPv4 INVITE inside the ACL",
            invite_from("198.51.100.9", APP_OFFICE),
        ),
        (
            "IPv6 INVITE inside the ACL",
            invite_from("2001:db8:a::9", APP_OFFICE),
        ),
        (
            "IPv4 INVITE to an app without ACL",
            invite_from("198.51.100.9", APP_OPEN),
        ),
    ] {
        let opts = TestRunOptions {
            data_in: Some(&frame),
            repeat: 100_000,
            ..Default::default()
        };
        let r = l.xdp.program().test_run(opts).expect("test_run");
        assert_eq!(r.return_value, XDP_PASS);
        eprintln!("ns per packet, {what}: {:?}", r.duration);
    }
    let info = l.xdp.program().info().expect("program info");
    eprintln!(
        "verified instructions (sipauth): {:?}",
        info.verified_instruction_count()
    );
    let info = l.xdp.record_program().info().expect("program info");
    eprintln!(
        "verified instructions (sipauth_record): {:?}",
        info.verified_instruction_count()
    );
}

#[test]
fn ipv6_sources_are_looked_up_and_counted_per_prefix() {
    let mut l = load_with_acls(0);
    // The default policy keys IPv6 sources by their /64.
    assert_eq!(l.xdp.settings().ipv6_prefix, 64);
    lock(&l, "2001:db8:1:2::5");
    assert_eq!(
        l.xdp.lockout_list().unwrap(),
        vec![(
            "2001:db8:1:2::".parse().unwrap(),
            l.xdp
                .lockout_get("2001:db8:1:2::5".parse().unwrap())
                .unwrap()
                .unwrap()
        )]
    );
    for src in [
        "2001:db8:1:2::5",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:db8:1:2::",
    ] {
        assert_eq!(run(&mut l, &frame6(src, 17, SIP)), XDP_DROP, "{src}");
    }
    for src in ["2001:db8:1:3::5", "2001:db8:1:1:ffff::5"] {
        assert_eq!(run(&mut l, &frame6(src, 17, SIP)), XDP_PASS, "{src}");
    }
    assert_eq!(count(&l, Reason::LockedDrop), 3);

    // Denials from two addresses of one /64 add up: 5 + 4 dropped in the
    // kernel, then the 10th, from a third address, counted by user space.
    let (a, b, c) = (
        "2001:db8:ff:1::a",
        "2001:db8:ff:1:8000::b",
        "2001:db8:ff:1::c",
    );
    for _ in 0..5 {
        assert_eq!(run(&mut l, &invite_from(a, APP_OFFICE)), XDP_DROP);
    }
    for _ in 0..4 {
        assert_eq!(run(&mut l, &invite_from(b, APP_OFFICE)), XDP_DROP);
    }
    let ip_c: IpAddr = c.parse().unwrap();
    assert_eq!(l.xdp.failure_count(ip_c).unwrap(), 9);
    assert_eq!(l.xdp.lockout_get(ip_c).unwrap(), None);
    // Another /64 of the same /48 has its own count.
    let other: IpAddr = "2001:db8:ff:2::a".parse().unwrap();
    assert_eq!(l.xdp.failure_count(other).unwrap(), 0);
    assert!(
        l.xdp.record_failure(ip_c).unwrap().is_some(),
        "the 10th locks"
    );
    // Now a fourth address of the /64 is dropped even towards an open app.
    assert_eq!(
        run(&mut l, &invite_from("2001:db8:ff:1::d", APP_OPEN)),
        XDP_DROP
    );
    assert_eq!(
        run(&mut l, &invite_from("2001:db8:ff:2::a", APP_OPEN)),
        XDP_PASS
    );
    assert_eq!(count(&l, Reason::LockedDrop), 4);
    // IPv4 stays per address.
    lock(&l, "192.0.2.77");
    assert_eq!(run(&mut l, &frame4("192.0.2.77", 17, SIP)), XDP_DROP);
    assert_eq!(run(&mut l, &frame4("192.0.2.78", 17, SIP)), XDP_PASS);

    // Per address (/128): the IPv6 entries keyed by /64 are dropped.
    l.xdp
        .set_lockout_policy(&LockoutPolicy::new(10, 60, 60, 128).unwrap())
        .unwrap();
    assert_eq!(l.xdp.settings().ipv6_prefix, 128);
    let left = l.xdp.lockout_list().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, "192.0.2.77".parse::<IpAddr>().unwrap());
    for _ in 0..10 {
        assert_eq!(run(&mut l, &invite_from(a, APP_OFFICE)), XDP_DROP);
    }
    assert!(l.xdp.lockout_get(a.parse().unwrap()).unwrap().is_some());
    assert_eq!(l.xdp.lockout_get(ip_c).unwrap(), None);
    assert_eq!(
        run(&mut l, &invite_from(c, APP_OPEN)),
        XDP_PASS,
        "a neighbour is not locked out per address"
    );
}

#[test]
fn never_lock_sources_are_judged_but_never_counted_or_locked_out() {
    use sipauth_common::never_lock::ORIGIN_RUNTIME;
    let mut l = load_with_acls(0);
    for cidr in ["203.0.113.0/24", "2001:db8:ee::/48", "2001:db8:dd:1::5/128"] {
        l.xdp
            .never_lock_insert(cidr.parse().unwrap(), ORIGIN_RUNTIME)
            .unwrap();
    }
    let mut listed: Vec<String> = l
        .xdp
        .never_lock_list()
        .unwrap()
        .iter()
        .map(|(n, o)| format!("{n} {o}"))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "2001:db8:dd:1::5/128 2",
            "2001:db8:ee::/48 2",
            "203.0.113.0/24 2"
        ]
    );
    // 20 denied INVITEs each from never-lock sources, IPv4 and IPv6: all
    // dropped (the ACL still says no), none counted towards a lockout.
    for src in ["203.0.113.5", "2001:db8:ee:4::1"] {
        for _ in 0..20 {
            assert_eq!(run(&mut l, &invite_from(src, APP_OFFICE)), XDP_DROP);
        }
        let ip: IpAddr = src.parse().unwrap();
        assert_eq!(l.xdp.failure_count(ip).unwrap(), 0, "{src}");
        assert_eq!(l.xdp.lockout_get(ip).unwrap(), None, "{src}");
        // Failures judged by user space are refused by the kernel too.
        assert_eq!(l.xdp.record_failure(ip).unwrap(), None);
        assert_eq!(l.xdp.failure_count(ip).unwrap(), 0);
        // Its other traffic passes.
        assert_eq!(run(&mut l, &invite_from(src, APP_OPEN)), XDP_PASS);
    }
    assert_eq!(count(&l, Reason::AclDeniedNeverLock), 40);
    assert_eq!(count(&l, Reason::AclDenied), 0);
    // The same attack from a source next door locks it out at the 10th.
    let next = "203.0.114.5";
    for _ in 0..10 {
        assert_eq!(run(&mut l, &invite_from(next, APP_OFFICE)), XDP_DROP);
    }
    assert!(l.xdp.lockout_get(next.parse().unwrap()).unwrap().is_some());
    assert_eq!(count(&l, Reason::AclDenied), 10);
    assert_eq!(run(&mut l, &invite_from(next, APP_OPEN)), XDP_DROP);

    // A locked /64 holding a never-lock /128: the /128 passes, its
    // neighbours are dropped.
    lock(&l, "2001:db8:dd:1::9");
    assert_eq!(run(&mut l, &frame6("2001:db8:dd:1::5", 17, SIP)), XDP_PASS);
    assert_eq!(run(&mut l, &frame6("2001:db8:dd:1::9", 17, SIP)), XDP_DROP);
    assert_eq!(run(&mut l, &frame6("2001:db8:dd:1::6", 17, SIP)), XDP_DROP);

    // Off the list, the source is counted again.
    assert!(
        l.xdp
            .never_lock_remove("203.0.113.0/24".parse().unwrap())
            .unwrap()
    );
    assert!(
        !l.xdp
            .never_lock_remove("203.0.113.0/24".parse().unwrap())
            .unwrap()
    );
    for _ in 0..10 {
        assert_eq!(
            run(&mut l, &invite_from("203.0.113.5", APP_OFFICE)),
            XDP_DROP
        );
    }
    assert!(
        l.xdp
            .lockout_get("203.0.113.5".parse().unwrap())
            .unwrap()
            .is_some()
    );
}

/// An ACK for a final non-2xx answer, with this To header line.
fn ack_with_to(to: &str) -> Vec<u8> {
    format!(
        "ACK sip:1003@sip.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n{to}\r\n\
         From: <sip:caller@example.net>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710\r\nCSeq: 314159 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn acks_of_stateless_answers_are_dropped_and_no_other_request() {
    let mut l = load_with_acls(0);
    let stateless = "To: <sip:1003@sip.example.com>;tag=sl-00d1ce5a0f3e7b21";
    let ack = ack_with_to(stateless);
    // From a source in good standing, over IPv4 and IPv6.
    for src in ["192.0.2.10", "2001:db8::10"] {
        assert_eq!(run(&mut l, &sip_frame(src, &ack)), XDP_DROP, "{src}");
    }
    // Compact and lower-case names.
    let compact = ack_with_to("t: <sip:1003@sip.example.com>;tag=sl-00d1ce5a0f3e7b21");
    assert_eq!(run(&mut l, &sip_frame("192.0.2.10", &compact)), XDP_DROP);
    assert_eq!(count(&l, Reason::AckOfStateless), 3);

    // The ACK of a stateful answer (hex tag), an ACK without a tag, the
    // same To in another method, the ACK over TCP or to another port: up.
    let passes = [
        sip_frame(
            "192.0.2.10",
            &ack_with_to("To: <sip:1003@sip.example.com>;tag=00d1ce5a0f3e7b21"),
        ),
        sip_frame("192.0.2.10", &ack_with_to("To: <sip:1003@sip.example.com>")),
        sip_frame("192.0.2.10", &[b"BYE".as_slice(), &ack[3..]].concat()),
        [
            eth(0x0800),
            ipv4("192.0.2.10", 6, 0, &[l4(6, SIP), ack.clone()].concat()),
        ]
        .concat(),
        [eth(0x0800), ipv4("192.0.2.10", 17, 0, &udp(5099, &ack))].concat(),
    ];
    for (n, frame) in passes.iter().enumerate() {
        assert_eq!(run(&mut l, frame), XDP_PASS, "frame {n}");
    }
    // A To header the program does not read that far for.
    let late = ack_with_to(&format!(
        "Subject: {}\r\n{stateless}",
        "x".repeat(sipauth_common::ack::SCAN_LEN)
    ));
    assert_eq!(run(&mut l, &sip_frame("192.0.2.10", &late)), XDP_PASS);
    // Cut short anywhere before the whole prefix: passed, never misread.
    let prefix_end = ack
        .windows(8)
        .position(|w| w == b";tag=sl-")
        .expect("the tag")
        + 8;
    for n in 4..prefix_end {
        assert_eq!(
            run(&mut l, &sip_frame("192.0.2.10", &ack[..n])),
            XDP_PASS,
            "{n} bytes"
        );
    }
    assert_eq!(count(&l, Reason::AckOfStateless), 3);

    // What the walk costs: to the tag, and over a whole ACK without it.
    let stateful = ack_with_to("To: <sip:1003@sip.example.com>;tag=00d1ce5a0f3e7b21");
    for (what, payload, verdict) in [
        ("ACK of a stateless answer", &ack, XDP_DROP),
        ("ACK of a stateful answer", &stateful, XDP_PASS),
    ] {
        let frame = sip_frame("192.0.2.10", payload);
        let opts = TestRunOptions {
            data_in: Some(&frame),
            repeat: 100_000,
            ..Default::default()
        };
        let r = l.xdp.program().test_run(opts).expect("test_run");
        assert_eq!(r.return_value, verdict);
        eprintln!("ns per packet, {what}: {:?}", r.duration);
    }
}
