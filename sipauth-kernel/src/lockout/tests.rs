//! The lockout table: counting, windows, never-lock and IPv6 prefixes.

use super::*;

#[test]
fn lock_list_lift() {
    let t = Lockouts::memory(Policy::default(), &[]);
    let a: IpAddr = "192.0.2.7".parse().unwrap();
    let b: IpAddr = "2001:db8::7".parse().unwrap();
    assert!(!t.is_locked(a));
    t.lock(a, Duration::from_mins(1)).unwrap();
    t.lock(b, Duration::from_secs(30)).unwrap();
    assert!(t.is_locked(a));
    assert!(t.is_locked(b));
    let l = t.list().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].address, "2001:db8::/64");
    assert_eq!(l[1].address, "192.0.2.7");
    assert!(l[0].remaining_secs <= 30 && l[0].remaining_secs >= 29);
    assert!(t.lift(a).unwrap());
    assert!(!t.lift(a).unwrap());
    assert!(!t.is_locked(a));
    assert!(t.is_locked(b));
}

#[test]
fn v4_mapped_source_is_the_v4_source() {
    let t = Lockouts::memory(Policy::default(), &[]);
    t.lock("192.0.2.9".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    assert!(t.is_locked("::ffff:192.0.2.9".parse().unwrap()));
}

#[tokio::test(start_paused = true)]
async fn tenth_failure_in_the_window_locks_out() {
    let p = Policy::default();
    let t = Lockouts::memory(p, &[]);
    let a: IpAddr = "192.0.2.50".parse().unwrap();
    for _ in 0..9 {
        assert!(!t.record_failure(a));
    }
    assert!(!t.is_locked(a));
    assert!(t.record_failure(a));
    assert!(t.is_locked(a));
}

#[tokio::test(start_paused = true)]
async fn failures_spread_beyond_the_window_do_not_lock() {
    let t = Lockouts::memory(Policy::default(), &[]);
    let a: IpAddr = "192.0.2.51".parse().unwrap();
    for _ in 0..9 {
        t.record_failure(a);
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..9 {
        assert!(!t.record_failure(a));
    }
    assert!(!t.is_locked(a));
    // Other sources have their own counters.
    let b: IpAddr = "2001:db8::51".parse().unwrap();
    assert!(!t.record_failure(b));
}

#[test]
fn counter_state_machine() {
    let p = Policy::new(3, 10, 5, 64).unwrap();
    let t0 = tokio::time::Instant::now();
    let (w, l) = count_failure(None, t0, &p);
    assert_eq!((w.count, l), (1, false));
    let (w, l) = count_failure(Some(w), t0 + Duration::from_secs(9), &p);
    assert_eq!((w.count, l), (2, false));
    let (w2, l) = count_failure(Some(w), t0 + Duration::from_secs(9), &p);
    assert!(l);
    assert_eq!(w2.count, 0);
    // A window that has passed starts again at 1.
    let (w3, l) = count_failure(Some(w), t0 + Duration::from_secs(10), &p);
    assert_eq!((w3.count, l), (1, false));
}

#[test]
fn zero_duration_is_not_locked() {
    let t = Lockouts::memory(Policy::default(), &[]);
    let a: IpAddr = "192.0.2.8".parse().unwrap();
    t.lock(a, Duration::ZERO).unwrap();
    assert!(!t.is_locked(a));
    assert!(t.list().unwrap().is_empty());
    assert!(!t.lift(a).unwrap());
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn ipv6_sources_are_keyed_by_their_prefix() {
    assert_eq!(
        source_key(ip("2001:db8:1:2:aaaa::1"), 64),
        ip("2001:db8:1:2::")
    );
    assert_eq!(
        source_key(ip("2001:db8:1:2:aaaa::1"), 48),
        ip("2001:db8:1::")
    );
    assert_eq!(
        source_key(ip("2001:db8:1:2:aaaa::1"), 128),
        ip("2001:db8:1:2:aaaa::1")
    );
    assert_eq!(source_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
    assert_eq!(source_key(ip("::ffff:192.0.2.1"), 1), ip("192.0.2.1"));
    assert_eq!(show(ip("2001:db8:1:2::"), 64), "2001:db8:1:2::/64");
    assert_eq!(show(ip("192.0.2.1"), 64), "192.0.2.1");
}

#[tokio::test(start_paused = true)]
async fn failures_within_one_ipv6_prefix_add_up() {
    let t = Lockouts::memory(Policy::default(), &[]);
    for i in 0..9u16 {
        let a = IpAddr::from([0x2001, 0xdb8, 1, 2, i, 0, 0, 1]);
        assert!(!t.record_failure(a));
    }
    // Another /64 has its own counter.
    assert!(!t.record_failure(ip("2001:db8:1:3::1")));
    assert!(!t.is_locked(ip("2001:db8:1:2::77")));
    assert!(t.record_failure(ip("2001:db8:1:2:ffff::1")));
    assert!(t.is_locked(ip("2001:db8:1:2::77")));
    assert!(!t.is_locked(ip("2001:db8:1:3::1")));
    let l = t.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].address, "2001:db8:1:2::/64");
    // Lifting any address of the prefix lifts the prefix.
    assert!(t.lift(ip("2001:db8:1:2::99")).unwrap());
    assert!(!t.is_locked(ip("2001:db8:1:2:aaaa::1")));
}

#[tokio::test(start_paused = true)]
async fn per_address_with_prefix_128() {
    let p = Policy::new(10, 60, 60, 128).unwrap();
    let t = Lockouts::memory(p, &[]);
    for _ in 0..10 {
        t.record_failure(ip("2001:db8::1"));
    }
    assert!(t.is_locked(ip("2001:db8::1")));
    assert!(!t.is_locked(ip("2001:db8::2")));
    assert_eq!(t.list().unwrap()[0].address, "2001:db8::1/128");
}

#[tokio::test(start_paused = true)]
async fn never_lock_sources_are_counted_but_never_locked() {
    let t = Lockouts::memory(
        Policy::default(),
        &[net("203.0.113.0/24"), net("2001:db8:5::/48")],
    );
    for _ in 0..50 {
        assert!(!t.record_failure(ip("203.0.113.9")));
        assert!(!t.record_failure(ip("2001:db8:5:1::9")));
    }
    assert_eq!(t.never_lock_failures(), 100);
    assert!(!t.is_locked(ip("203.0.113.9")));
    assert!(t.list().unwrap().is_empty());
    // A neighbour outside the list is locked out by the same attack.
    for _ in 0..10 {
        t.record_failure(ip("203.0.114.9"));
    }
    assert!(t.is_locked(ip("203.0.114.9")));
    assert_eq!(t.never_lock_failures(), 100);
    // The operator cannot lock a never-lock address out.
    let e = t
        .lock(ip("203.0.113.9"), Duration::from_mins(1))
        .unwrap_err();
    assert!(
        matches!(e, LockoutError::NeverLock { cidr, .. } if cidr == net("203.0.113.0/24")),
        "{e}"
    );
    assert!(!t.is_locked(ip("203.0.113.9")));
}

#[tokio::test(start_paused = true)]
async fn adding_a_prefix_lifts_the_lockouts_inside_it() {
    let t = Lockouts::memory(Policy::default(), &[net("192.0.2.0/24")]);
    for a in [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.101.1",
        "2001:db8:7:1::1",
    ] {
        for _ in 0..10 {
            t.record_failure(ip(a));
        }
        assert!(t.is_locked(ip(a)), "{a}");
    }
    let added = t.never_lock_add(net("198.51.100.0/24")).unwrap();
    assert!(added.created);
    assert_eq!(added.lifted, 2);
    assert_eq!(added.entry.origin, Origin::Runtime);
    assert!(!t.is_locked(ip("198.51.100.1")));
    assert!(t.is_locked(ip("198.51.101.1")));
    // Adding it again changes nothing.
    let again = t.never_lock_add(net("198.51.100.0/24")).unwrap();
    assert_eq!((again.created, again.lifted), (false, 0));
    // A /128 inside a locked /64: the prefix stays locked out, the
    // never-lock address is let through.
    let added = t.never_lock_add(net("2001:db8:7:1::5/128")).unwrap();
    assert_eq!(added.lifted, 0);
    assert!(t.is_locked(ip("2001:db8:7:1::1")));
    assert!(!t.is_locked(ip("2001:db8:7:1::5")));
    // Config entries stay; runtime ones go.
    assert!(matches!(
        t.never_lock_remove(net("192.0.2.0/24")),
        Err(LockoutError::FromConfig { .. })
    ));
    assert!(matches!(
        t.never_lock_remove(net("192.0.3.0/24")),
        Err(LockoutError::NotListed { .. })
    ));
    t.never_lock_remove(net("198.51.100.0/24")).unwrap();
    let cidrs: Vec<String> = t.never_lock().iter().map(|e| e.cidr.to_string()).collect();
    assert_eq!(cidrs, ["192.0.2.0/24", "2001:db8:7:1::5/128"]);
    // Off the list, the source is counted afresh.
    for _ in 0..9 {
        assert!(!t.record_failure(ip("198.51.100.1")));
    }
    assert!(t.record_failure(ip("198.51.100.1")));
}
