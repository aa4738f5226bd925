//! RFC 3261 server transactions (section 17.2), keyed by the top Via's
//! branch and sent-by and the method (ACK and CANCEL match the INVITE).
//!
//! A retransmitted request finds its transaction and gets the last response
//! again: it is never judged (or counted) twice. A final non-2xx response to
//! an INVITE over UDP is retransmitted (Timer G, doubling from T1 to T2)
//! until the ACK arrives or Timer H (64*T1) fires; the ACK is absorbed.
//! Transactions are forgotten 64*T1 after they start (Timer J/H bound), and
//! at once when their final response went over TCP.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};

use super::transport::Replier;

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// Timer H and Timer J: 64*T1.
pub const LIFETIME: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    branch: String,
    sent_by: String,
    /// `INVITE` for INVITE and its ACK; the request method otherwise.
    method: String,
}

impl Key {
    /// The key of a request; RFC 2543 requests without a magic-cookie
    /// branch are keyed by Call-ID, CSeq number and From tag instead.
    pub fn of(msg: &sipauth_sip::Message<'_>) -> Option<Self> {
        let via = msg.top_via().ok()?;
        let method = msg.method()?;
        let method = if method == "ACK" { "INVITE" } else { method };
        let branch = match via.branch {
            Some(b) if b.starts_with("z9hG4bK") => b.to_owned(),
            _ => {
                let (n, _) = msg.cseq().ok()?;
                let tag = msg.from().ok()?.tag.unwrap_or_default();
                format!("2543:{}:{n}:{tag}", msg.call_id().ok()?)
            }
        };
        let sent_by = match via.port {
            Some(p) => format!("{}:{p}", via.host),
            None => via.host.to_owned(),
        };
        Some(Self {
            branch,
            sent_by: sent_by.to_ascii_lowercase(),
            method: method.to_owned(),
        })
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
    started: Instant,
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
            }
            return Seen::Ack;
        }
        if let Some(t) = map.get(key) {
            if let Some(last) = &t.last {
                replier.send(last.as_ref().clone());
            }
            return Seen::Retransmission;
        }
        map.insert(
            key.clone(),
            Txn {
                state: State::Proceeding,
                last: None,
                started: Instant::now(),
            },
        );
        Seen::New
    }

    /// Sends a response within the transaction and remembers it for
    /// retransmissions. Final non-2xx INVITE responses over UDP are
    /// retransmitted until the ACK.
    pub fn respond(self: &Arc<Self>, key: &Key, code: u16, bytes: Vec<u8>, replier: &Replier) {
        let bytes = Arc::new(bytes);
        replier.send(bytes.as_ref().clone());
        let final_ = code >= 200;
        {
            let mut map = self.map.lock().expect("transactions");
            if let Some(t) = map.get_mut(key) {
                t.last = Some(bytes.clone());
                if final_ {
                    t.state = State::Completed;
                }
            }
        }
        if final_ && !(200..300).contains(&code) && key.method == "INVITE" && !replier.is_reliable()
        {
            let this = self.clone();
            let key = key.clone();
            let replier = replier.clone();
            tokio::spawn(async move { this.retransmit(key, bytes, replier).await });
        }
    }

    async fn retransmit(self: Arc<Self>, key: Key, bytes: Arc<Vec<u8>>, replier: Replier) {
        let deadline = Instant::now() + LIFETIME;
        let mut interval = T1;
        loop {
            tokio::time::sleep(interval).await;
            if Instant::now() >= deadline {
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
            interval = (interval * 2).min(T2);
        }
    }

    /// Drops transactions older than [`LIFETIME`]; run every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.map
            .lock()
            .expect("transactions")
            .retain(|_, t| now.duration_since(t.started) < LIFETIME);
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
    use crate::edge::transport::Replier;

    fn invite(branch: &str, method: &str) -> Vec<u8> {
        format!(
            "{method} sip:1@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:1@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn retransmissions_get_the_last_response_and_ack_stops_timer_g() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let raw = invite("z9hG4bKabc", "INVITE");
        let msg = sipauth_sip::parse(&raw).unwrap();
        let key = Key::of(&msg).unwrap();
        assert!(matches!(t.arrive(&key, false, &replier), Seen::New));
        t.respond(&key, 407, b"407".to_vec(), &replier);
        assert_eq!(rx.recv().await.unwrap(), b"407");
        // The same INVITE again: no new judgement, the same answer.
        assert!(matches!(
            t.arrive(&key, false, &replier),
            Seen::Retransmission
        ));
        assert_eq!(rx.recv().await.unwrap(), b"407");
        // Timer G fires after T1.
        tokio::time::advance(T1 + Duration::from_millis(1)).await;
        assert_eq!(rx.recv().await.unwrap(), b"407");
        // The ACK (same branch) stops it.
        let ack = invite("z9hG4bKabc", "ACK");
        let ack_key = Key::of(&sipauth_sip::parse(&ack).unwrap()).unwrap();
        assert_eq!(ack_key, key);
        assert!(matches!(t.arrive(&ack_key, true, &replier), Seen::Ack));
        tokio::time::advance(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err());
        // Forgotten after 64*T1.
        tokio::time::advance(LIFETIME).await;
        t.sweep();
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn timer_g_stops_at_timer_h() {
        let (replier, mut rx) = Replier::channel();
        let t = Arc::new(Transactions::default());
        let raw = invite("z9hG4bKdef", "INVITE");
        let key = Key::of(&sipauth_sip::parse(&raw).unwrap()).unwrap();
        t.arrive(&key, false, &replier);
        t.respond(&key, 403, b"403".to_vec(), &replier);
        let mut sent = 0;
        for _ in 0..400 {
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
            while rx.try_recv().is_ok() {
                sent += 1;
            }
        }
        // Initial send plus retransmissions at 0.5, 1.5, 3.5, 7.5, 11.5, ...
        assert!((8..=12).contains(&sent), "{sent}");
    }

    #[test]
    fn different_branches_and_methods_are_different_transactions() {
        let a = Key::of(&sipauth_sip::parse(&invite("z9hG4bK1", "INVITE")).unwrap()).unwrap();
        let b = Key::of(&sipauth_sip::parse(&invite("z9hG4bK2", "INVITE")).unwrap()).unwrap();
        let c = Key::of(&sipauth_sip::parse(&invite("z9hG4bK1", "OPTIONS")).unwrap()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
