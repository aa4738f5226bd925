//! RFC 3261 server transactions (section 17.2), keyed by the top Via's
//! branch and sent-by and the method (ACK and CANCEL match the INVITE).
//!
//! A retransmitted request finds its transaction and gets the last response
//! again: it is never judged (or counted) twice. The transaction moves to
//! Completed before its final response leaves, so an ACK that comes back at
//! once always finds it there.
//!
//! A final response sent straight away (no provisional response before it:
//! a challenge, a denial) is not retransmitted: the client is still
//! retransmitting its request and each retransmission is answered from the
//! transaction, so the answer cannot be lost, and a request from a forged
//! source costs one reply, not eleven (RFC 3261 8.2.7, 26.1.5). Answers with
//! no effect beyond the response itself (challenges, 404, 405) need no
//! transaction at all: [`Transactions::respond_stateless`] forgets it, and a
//! retransmission is judged again to the same effect. A final non-2xx
//! response to an INVITE over UDP that follows a provisional one (the
//! client has stopped retransmitting) is retransmitted (Timer G, doubling
//! from T1 to T2, [`super::Retransmit::timer_g`]) until the ACK arrives
//! or Timer H (64*T1) fires; the ACK is absorbed. An INVITE transaction
//! whose final response was acknowledged is forgotten after Timer I (T4
//! over UDP, where it absorbs retransmitted ACKs; at once over TCP and
//! TLS), any other 64*T1 after it started (the Timer J and H bound); at
//! most [`MAX_TRANSACTIONS`] are remembered.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};

use super::timers::{Retransmit, Timers};
use crate::transport::Replier;

/// The timers of server transactions: RFC 3261's values.
const TIMERS: Timers = Timers::RFC;
/// Timer H and Timer J: 64*T1.
pub const LIFETIME: Duration = TIMERS.timer_h();
/// Transactions remembered at most. Past it a new request is still judged
/// and answered, but not remembered: a retransmission of it is judged
/// again. Only a flood of denied requests fills the table (challenges are
/// not remembered), and it costs about 1 KiB per entry.
pub const MAX_TRANSACTIONS: usize = 262_144;

/// A server transaction's key (RFC 3261 17.2.3): the top Via's branch and
/// sent-by, and the method (ACK counted as INVITE). The three are kept in
/// one string, built with one allocation per message; the lengths of the
/// first two are part of the key, so no two triples share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Branch, sent-by (lower-cased), method.
    text: Box<str>,
    branch_len: u32,
    sent_by_len: u32,
}

impl Key {
    /// The key of a request; RFC 2543 requests without a magic-cookie
    /// branch are keyed by Call-ID, CSeq number and From tag instead.
    pub fn of(msg: &sipauth_sip::Message<'_>) -> Option<Self> {
        use std::fmt::Write as _;
        let via = msg.top_via().ok()?;
        let method = msg.method()?;
        let method = if method == "ACK" { "INVITE" } else { method };
        let mut port = itoa::Buffer::new();
        let port = via.port.map(|p| port.format(p));
        let sent_by_len = via.host.len() + port.map_or(0, |p| 1 + p.len());
        let mut text = String::new();
        match via.branch {
            Some(b) if b.starts_with("z9hG4bK") => {
                text.reserve_exact(b.len() + sent_by_len + method.len());
                text.push_str(b);
            }
            _ => {
                let (n, _) = msg.cseq().ok()?;
                let tag = msg.from().ok()?.tag.unwrap_or_default();
                let _ = write!(text, "2543:{}:{n}:{tag}", msg.call_id().ok()?);
            }
        }
        let branch_len = text.len();
        text.push_str(via.host);
        if let Some(p) = port {
            text.push(':');
            text.push_str(p);
        }
        text[branch_len..].make_ascii_lowercase();
        text.push_str(method);
        Some(Self {
            text: text.into_boxed_str(),
            branch_len: u32::try_from(branch_len).ok()?,
            sent_by_len: u32::try_from(sent_by_len).ok()?,
        })
    }

    /// The request method (`INVITE` for an ACK).
    fn method(&self) -> &str {
        &self.text[(self.branch_len + self.sent_by_len) as usize..]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Judging; a provisional response may have been sent.
    Proceeding,
    /// A final response was sent.
    Completed,
    /// INVITE only: the ACK for the final non-2xx response arrived.
    Confirmed,
}

struct Txn {
    state: State,
    last: Option<Arc<Vec<u8>>>,
    /// When [`Transactions::sweep`] forgets it.
    until: Instant,
    /// The task sending the final response again (Timer G), ended when
    /// the ACK arrives: an acknowledged call leaves no timer behind to
    /// wake the edge for nothing.
    retransmit: Option<tokio::task::AbortHandle>,
}

/// What the edge should do with a request.
pub enum Seen {
    /// A new transaction: judge the request.
    New,
    /// A retransmission: the last response (if any) has been sent again.
    Retransmission,
    /// An ACK that ended an INVITE transaction, or matched none.
    Ack,
}

#[derive(Default)]
pub struct Transactions {
    map: Mutex<HashMap<Key, Txn>>,
}

// === impl Transactions ===

impl Transactions {
    /// Looks the request up; creates its transaction when it is new.
    pub fn arrive(&self, key: &Key, is_ack: bool, replier: &Replier) -> Seen {
        let mut map = self.map.lock().expect("transactions");
        if is_ack {
            if let Some(t) = map.get_mut(key)
                && t.state == State::Completed
            {
                t.state = State::Confirmed;
                if let Some(task) = t.retransmit.take() {
                    task.abort();
                }
                // Timer I: every acknowledged call would otherwise stay
                // 64*T1, a table of hundreds of thousands at thousands of
                // calls per second.
                if replier.is_reliable() {
                    map.remove(key);
                } else {
                    t.until = t.until.min(Instant::now() + TIMERS.timer_i());
                }
            }
            return Seen::Ack;
        }
        if let Some(t) = map.get(key) {
            let last = t.last.clone();
            drop(map);
            if let Some(last) = last {
                replier.send(last.as_ref().clone());
            }
            return Seen::Retransmission;
        }
        if map.len() < MAX_TRANSACTIONS {
            map.insert(
                key.clone(),
                Txn {
                    state: State::Proceeding,
                    last: None,
                    until: Instant::now() + LIFETIME,
                    retransmit: None,
                },
            );
        }
        Seen::New
    }

    /// Sends a response within the transaction and remembers it for
    /// retransmissions of the request. A final non-2xx INVITE response over
    /// UDP that follows a provisional one is retransmitted until the ACK.
    pub fn respond(self: &Arc<Self>, key: &Key, code: u16, bytes: Vec<u8>, replier: &Replier) {
        let bytes = Arc::new(bytes);
        let final_ = code >= 200;
        // The state changes before the response leaves: an ACK that
        // answers it at once must find the transaction Completed.
        let after_provisional = {
            let mut map = self.map.lock().expect("transactions");
            map.get_mut(key).is_some_and(|t| {
                let after = t.last.is_some();
                t.last = Some(bytes.clone());
                if final_ {
                    t.state = State::Completed;
                }
                after
            })
        };
        replier.send(bytes.as_ref().clone());
        if final_
            && after_provisional
            && !(200..300).contains(&code)
            && key.method() == "INVITE"
            && !replier.is_reliable()
        {
            let this = self.clone();
            let task_key = key.clone();
            let replier = replier.clone();
            let task = tokio::spawn(async move { this.retransmit(task_key, bytes, replier).await })
                .abort_handle();
            let mut map = self.map.lock().expect("transactions");
            match map.get_mut(key) {
                // The ACK may have come while the task was being started.
                Some(t) if t.state == State::Completed => t.retransmit = Some(task),
                _ => task.abort(),
            }
        }
    }

    /// Sends a final response and forgets the transaction: a
    /// retransmission of the request is judged again. For answers with no
    /// effect but the response (challenges, 404, 405, OPTIONS).
    pub fn respond_stateless(&self, key: &Key, bytes: Vec<u8>, replier: &Replier) {
        self.map.lock().expect("transactions").remove(key);
        replier.send(bytes);
    }

    async fn retransmit(self: Arc<Self>, key: Key, bytes: Arc<Vec<u8>>, replier: Replier) {
        // Timer G, until Timer H.
        let mut schedule = Retransmit::timer_g(&TIMERS, Instant::now(), false);
        while let Some(at) = schedule.next_deadline() {
            tokio::time::sleep_until(at).await;
            if !schedule.fire(Instant::now()) {
                return;
            }
            let completed = self
                .map
                .lock()
                .expect("transactions")
                .get(&key)
                .is_some_and(|t| t.state == State::Completed);
            if !completed {
                return;
            }
            replier.send(bytes.as_ref().clone());
        }
    }

    /// Drops the transactions whose time is over (see the module doc); run
    /// every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.map
            .lock()
            .expect("transactions")
            .retain(|_, t| now < t.until);
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("transactions").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Replier;

    fn invite(branch: &str, method: &str) -> Vec<u8> {
        format!(
            "{method} sip:1@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:1@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) -> usize {
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_final_is_sent_once_and_again_per_retransmission() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let raw = invite("z9hG4bKabc", "INVITE");
        let msg = sipauth_sip::parse(&raw).unwrap();
        let key = Key::of(&msg).unwrap();
        assert!(matches!(t.arrive(&key, false, &replier), Seen::New));
        t.respond(&key, 403, b"403".to_vec(), &replier);
        assert_eq!(rx.recv().await.unwrap(), b"403");
        // No Timer G: nothing more while nobody retransmits.
        for _ in 0..40 {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(drain(&mut rx), 0);
        // The same INVITE again: no new judgement, the same answer, once.
        assert!(matches!(
            t.arrive(&key, false, &replier),
            Seen::Retransmission
        ));
        assert_eq!(rx.recv().await.unwrap(), b"403");
        assert_eq!(drain(&mut rx), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stateless_answer_forgets_its_transaction() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let key = Key::of(&sipauth_sip::parse(&invite("z9hG4bKst", "INVITE")).unwrap()).unwrap();
        assert!(matches!(t.arrive(&key, false, &replier), Seen::New));
        t.respond_stateless(&key, b"407".to_vec(), &replier);
        assert_eq!(rx.recv().await.unwrap(), b"407");
        assert!(t.is_empty());
        // Its retransmission is a new request, judged again.
        assert!(matches!(t.arrive(&key, false, &replier), Seen::New));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_after_a_provisional_is_retransmitted_until_the_ack() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let raw = invite("z9hG4bKdly", "INVITE");
        let key = Key::of(&sipauth_sip::parse(&raw).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 100, b"100".to_vec(), &replier);
        t.respond(&key, 603, b"603".to_vec(), &replier);
        assert_eq!(drain(&mut rx), 2);
        // Timer G fires after T1.
        tokio::time::advance(TIMERS.t1 + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await.unwrap(), b"603");
        // The ACK (same branch) stops it.
        let ack = invite("z9hG4bKdly", "ACK");
        let ack_key = Key::of(&sipauth_sip::parse(&ack).unwrap()).unwrap();
        assert_eq!(ack_key, key);
        assert!(matches!(t.arrive(&ack_key, true, &replier), Seen::Ack));
        tokio::time::advance(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert_eq!(drain(&mut rx), 0);
        t.sweep();
        assert!(t.is_empty(), "forgotten after Timer I");
    }

    /// Acknowledged over UDP, an INVITE transaction absorbs retransmitted
    /// ACKs for T4 (Timer I), then is forgotten; unacknowledged, it stays
    /// 64*T1.
    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_invite_is_forgotten_after_timer_i() {
        let (replier, _rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let acked = Key::of(&sipauth_sip::parse(&invite("z9hG4bKi1", "INVITE")).unwrap()).unwrap();
        let unacked =
            Key::of(&sipauth_sip::parse(&invite("z9hG4bKi2", "INVITE")).unwrap()).unwrap();
        for key in [&acked, &unacked] {
            t.arrive(key, false, &replier);
            t.respond(key, 100, b"100".to_vec(), &replier);
            t.respond(key, 603, b"603".to_vec(), &replier);
        }
        t.arrive(&acked, true, &replier);
        tokio::time::advance(TIMERS.timer_i().saturating_sub(Duration::from_millis(1))).await;
        t.sweep();
        assert_eq!(t.len(), 2, "both kept within T4");
        assert!(matches!(t.arrive(&acked, true, &replier), Seen::Ack));
        tokio::time::advance(Duration::from_millis(2)).await;
        t.sweep();
        assert_eq!(t.len(), 1, "the acknowledged one forgotten");
        tokio::time::advance(LIFETIME).await;
        t.sweep();
        assert!(t.is_empty());
    }

    /// Over TCP and TLS an ACK is never retransmitted: Timer I is zero.
    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_invite_over_a_reliable_transport_is_forgotten_at_once() {
        let (replier, mut rx) = Replier::channel_over(crate::transport::Transport::Tcp);
        let t = Arc::new(Transactions::default());
        let key = Key::of(&sipauth_sip::parse(&invite("z9hG4bKi3", "INVITE")).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 100, b"100".to_vec(), &replier);
        t.respond(&key, 486, b"486".to_vec(), &replier);
        assert_eq!(drain(&mut rx), 2);
        assert_eq!(t.len(), 1);
        assert!(matches!(t.arrive(&key, true, &replier), Seen::Ack));
        assert!(t.is_empty());
    }

    /// The ACK ends the task of Timer G at once: nothing is left to wake
    /// the edge after an acknowledged answer.
    #[tokio::test(start_paused = true)]
    async fn the_ack_ends_the_retransmission_task() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let key = Key::of(&sipauth_sip::parse(&invite("z9hG4bKend", "INVITE")).unwrap()).unwrap();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        t.arrive(&key, false, &replier);
        t.respond(&key, 100, b"100".to_vec(), &replier);
        t.respond(&key, 603, b"603".to_vec(), &replier);
        assert_eq!(drain(&mut rx), 2);
        assert_eq!(tasks(), 1, "Timer G runs");
        t.arrive(&key, true, &replier);
        tokio::task::yield_now().await;
        assert_eq!(tasks(), 0, "the ACK ended it before its first timer");
    }

    /// The ACK sent the moment the final response is seen: the
    /// transaction is Completed before the response leaves, so the ACK
    /// always stops Timer G.
    #[tokio::test(start_paused = true)]
    async fn an_ack_racing_the_final_stops_timer_g() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let key = Key::of(&sipauth_sip::parse(&invite("z9hG4bKrace", "INVITE")).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 100, b"100".to_vec(), &replier);
        assert_eq!(rx.recv().await.unwrap(), b"100");
        let acker = {
            let (t, key, replier) = (t.clone(), key.clone(), replier.clone());
            tokio::spawn(async move {
                let got = rx.recv().await.unwrap();
                t.arrive(&key, true, &replier);
                (got, rx)
            })
        };
        t.respond(&key, 603, b"603".to_vec(), &replier);
        let (got, mut rx) = acker.await.unwrap();
        assert_eq!(got, b"603");
        tokio::time::advance(LIFETIME).await;
        tokio::task::yield_now().await;
        assert_eq!(drain(&mut rx), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn timer_g_stops_at_timer_h() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let raw = invite("z9hG4bKdef", "INVITE");
        let key = Key::of(&sipauth_sip::parse(&raw).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 100, b"100".to_vec(), &replier);
        t.respond(&key, 403, b"403".to_vec(), &replier);
        let mut sent = 0;
        for _ in 0..400 {
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
            sent += drain(&mut rx);
        }
        // Provisional, final, and retransmissions at 0.5, 1.5, 3.5, 7.5, ...
        assert!((9..=13).contains(&sent), "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn timer_g_times() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let key = Key::of(&sipauth_sip::parse(&invite("z9hG4bKtg", "INVITE")).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 183, b"183".to_vec(), &replier);
        let t0 = Instant::now();
        t.respond(&key, 486, b"486".to_vec(), &replier);
        assert_eq!(drain(&mut rx), 2);
        let watcher = tokio::spawn(async move {
            let mut at = Vec::new();
            while let Some(m) = rx.recv().await {
                assert_eq!(m, b"486");
                at.push(t0.elapsed().as_millis());
            }
            at
        });
        tokio::time::sleep(Duration::from_secs(40)).await;
        drop(replier);
        drop(t);
        // T1 doubling up to T2; the one due at 35.5 s is past Timer H.
        assert_eq!(
            watcher.await.unwrap(),
            [
                500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
            ]
        );
    }

    #[test]
    fn different_branches_and_methods_are_different_transactions() {
        let a = Key::of(&sipauth_sip::parse(&invite("z9hG4bK1", "INVITE")).unwrap()).unwrap();
        let b = Key::of(&sipauth_sip::parse(&invite("z9hG4bK2", "INVITE")).unwrap()).unwrap();
        let c = Key::of(&sipauth_sip::parse(&invite("z9hG4bK1", "OPTIONS")).unwrap()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    fn key_via(via: &str, method: &str) -> Key {
        let raw = String::from_utf8(invite("x", method))
            .unwrap()
            .replace("SIP/2.0/UDP 192.0.2.1:5060;branch=x", via);
        Key::of(&sipauth_sip::parse(raw.as_bytes()).unwrap()).unwrap()
    }

    /// An ACK is keyed as its INVITE, sent-by is compared without case,
    /// and where the branch ends is part of the key.
    #[test]
    fn keys_follow_rfc_3261_17_2_3() {
        let invite = key_via("SIP/2.0/UDP Host.Example:5060;branch=z9hG4bKa", "INVITE");
        assert_eq!(invite.method(), "INVITE");
        assert_eq!(
            invite,
            key_via("SIP/2.0/UDP host.example:5060;branch=z9hG4bKa", "ACK")
        );
        assert_ne!(
            invite,
            key_via("SIP/2.0/UDP host.example:5061;branch=z9hG4bKa", "INVITE")
        );
        assert_ne!(
            invite,
            key_via("SIP/2.0/UDP Host.Example;branch=z9hG4bKa", "INVITE")
        );
        // The same characters split differently between branch and sent-by.
        assert_ne!(
            key_via("SIP/2.0/UDP ab;branch=z9hG4bKx", "INVITE"),
            key_via("SIP/2.0/UDP b;branch=z9hG4bKxa", "INVITE")
        );
        // RFC 2543: Call-ID, CSeq number and From tag.
        let old = key_via("SIP/2.0/UDP 192.0.2.1;branch=1", "INVITE");
        assert_eq!(old.method(), "INVITE");
        assert_eq!(old, key_via("SIP/2.0/UDP 192.0.2.1", "ACK"));
    }
}
