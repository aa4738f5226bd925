//! Client transactions (RFC 3261 17.1): INVITE with Timer A and Timer B,
//! non-INVITE (BYE, CANCEL) with Timer E and Timer F.
//!
//! Timer A retransmits an INVITE over UDP from T1, doubling, until a
//! response arrives; Timer B ends the transaction when none has arrived
//! after 64*T1. After a provisional response the INVITE waits up to the
//! ring timeout for its final response. Over TCP nothing is retransmitted.
//! The schedules are [`Retransmit::timer_a`] and [`Retransmit::timer_e`].
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use sipauth_sip::{Message, OwnedMessage};

use super::Timers;
use super::conn::Conn;
use crate::sip::{Retransmit, wait_until};

/// How a client transaction ended.
#[derive(Debug)]
pub enum End {
    /// The final response, parsed once on arrival.
    Final(OwnedMessage),
    /// No final response in time; `provisional` is the highest provisional
    /// status seen (0 when nothing came back at all).
    Timeout {
        provisional: u16,
    },
    Transport(io::Error),
    /// The INVITE was asked to stop after a provisional response; the
    /// caller sends the CANCEL.
    Cancelled {
        provisional: u16,
    },
}

/// What a bridged INVITE shares with the leg on the other side: its
/// provisional responses (180 and up) and a request to cancel it.
#[derive(Debug, Default)]
pub struct Hooks {
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<OwnedMessage>>,
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Resolves once a cancel was asked for; never without a receiver.
async fn cancel_asked(cancel: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match cancel {
        Some(rx) => {
            if rx.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Earlier transactions' ACKs, re-sent when their final response is
/// retransmitted (the far end missed the ACK).
#[derive(Default)]
pub struct Acks(Vec<(String, Vec<u8>)>);

impl Acks {
    pub fn push(&mut self, branch: String, ack: Vec<u8>) {
        if self.0.len() >= 8 {
            self.0.remove(0);
        }
        self.0.push((branch, ack));
    }

    fn for_branch(&self, branch: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(b, _)| b == branch)
            .map(|(_, a)| a.as_slice())
    }

    /// Re-sends the ACK when `m` is a final response to an earlier
    /// transaction; true when it was one.
    pub async fn absorb(&self, conn: &mut Conn, m: &Message<'_>) -> bool {
        let branch = m.top_via().ok().and_then(|v| v.branch);
        let Some(ack) = branch.and_then(|b| self.for_branch(b)) else {
            return false;
        };
        if m.status().is_some_and(|s| s >= 200) {
            let _ = conn.send(ack).await;
        }
        true
    }
}

/// The status when `m` is a response to the transaction `branch` /
/// `method`.
pub fn response_to(m: &Message<'_>, branch: &str, method: &str) -> Option<u16> {
    let status = m.status()?;
    let via = m.top_via().ok()?;
    let (_, cseq_method) = m.cseq().ok()?;
    (via.branch == Some(branch) && cseq_method == method).then_some(status)
}

/// Runs an INVITE client transaction for `req` (already built with
/// `branch`). Messages that belong elsewhere go to `acks`. A cancel asked
/// through `hooks` ends it once a provisional response has arrived (RFC
/// 3261 9.1: no CANCEL before one); after the first provisional response
/// it waits up to `ring_timeout` for the final one.
pub async fn invite(
    conn: &mut Conn,
    req: &[u8],
    branch: &str,
    timers: &Timers,
    ring_timeout: Duration,
    acks: &Acks,
    hooks: &mut Hooks,
) -> End {
    if let Err(e) = conn.send(req).await {
        return End::Transport(e);
    }
    let mut schedule = Retransmit::timer_a(timers, Instant::now(), conn.reliable());
    let mut provisional = 0u16;
    let mut ring_deadline: Option<Instant> = None;
    let mut cancel_wanted = false;
    loop {
        let deadline = ring_deadline.or_else(|| schedule.next_deadline());
        tokio::select! {
            () = cancel_asked(hooks.cancel.as_mut()), if !cancel_wanted => {
                cancel_wanted = true;
                if provisional > 0 {
                    return End::Cancelled { provisional };
                }
            }
            () = wait_until(deadline) => {
                if ring_deadline.is_some() || !schedule.fire(Instant::now()) {
                    return End::Timeout { provisional };
                }
                if let Err(e) = conn.send(req).await {
                    return End::Transport(e);
                }
            }
            r = conn.recv() => {
                let msg = match r {
                    Ok(msg) => msg,
                    Err(e) => return End::Transport(e),
                };
                let status = response_to(&msg.message(), branch, "INVITE");
                match status {
                    Some(s @ 100..=199) => {
                        provisional = provisional.max(s);
                        schedule.provisional();
                        if ring_deadline.is_none() {
                            ring_deadline = Some(Instant::now() + ring_timeout);
                        }
                        if cancel_wanted {
                            return End::Cancelled { provisional };
                        }
                        if s > 100
                            && let Some(tx) = &hooks.progress
                        {
                            let _ = tx.send(msg);
                        }
                    }
                    Some(_) => return End::Final(msg),
                    None => {
                        acks.absorb(conn, &msg.message()).await;
                    }
                }
            }
        }
    }
}

/// Runs a non-INVITE client transaction (BYE, INFO, UPDATE): retransmissions
/// from T1 doubling up to T2 over UDP (every T2 after a provisional
/// response), Timer F = `timers.timer_f()`. The far end's requests that
/// come meanwhile are its dialog's (a BYE crossing ours): they go to
/// `requests`, in order.
pub async fn non_invite(
    conn: &mut Conn,
    req: &[u8],
    branch: &str,
    method: &str,
    timers: &Timers,
    acks: &Acks,
    requests: &mut VecDeque<OwnedMessage>,
) -> End {
    if let Err(e) = conn.send(req).await {
        return End::Transport(e);
    }
    let mut schedule = Retransmit::timer_e(timers, Instant::now(), conn.reliable());
    let mut provisional = 0u16;
    loop {
        tokio::select! {
            () = wait_until(schedule.next_deadline()) => {
                if !schedule.fire(Instant::now()) {
                    return End::Timeout { provisional };
                }
                if let Err(e) = conn.send(req).await {
                    return End::Transport(e);
                }
            }
            r = conn.recv() => {
                let msg = match r {
                    Ok(msg) => msg,
                    Err(e) => return End::Transport(e),
                };
                if msg.message().method().is_some() {
                    requests.push_back(msg);
                    continue;
                }
                let status = response_to(&msg.message(), branch, method);
                match status {
                    Some(s @ 100..=199) => {
                        provisional = provisional.max(s);
                        schedule.provisional();
                    }
                    Some(_) => return End::Final(msg),
                    None => {
                        acks.absorb(conn, &msg.message()).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbound::{RING_TIMEOUT, message};

    fn invite_bytes(branch: &str) -> Vec<u8> {
        message::build(&message::Request {
            method: "INVITE",
            uri: "sip:bob@192.0.2.2",
            transport: "UDP",
            sent_by: "192.0.2.1:40000",
            branch,
            from: "<sip:alice@192.0.2.1>;tag=1",
            to: "<sip:bob@192.0.2.2>",
            call_id: "c",
            cseq: 1,
            contact: None,
            extra: &[],
            body: None,
        })
    }

    fn response(code: u16, branch: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch={branch}\r\n\
             From: <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:bob@192.0.2.2>;tag=2\r\n\
             Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn timer_a_doubles_and_timer_b_ends_it() {
        let (mut conn, _to_leg, mut from_leg) = Conn::mem(false);
        let t0 = Instant::now();
        let req = invite_bytes("z9hG4bKa");
        let end = invite(
            &mut conn,
            &req,
            "z9hG4bKa",
            &Timers::default(),
            RING_TIMEOUT,
            &Acks::default(),
            &mut Hooks::default(),
        )
        .await;
        assert!(matches!(end, End::Timeout { provisional: 0 }), "{end:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(32));
        let mut sent = 0;
        while from_leg.try_recv().is_ok() {
            sent += 1;
        }
        // At 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s.
        assert_eq!(sent, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn retransmission_times() {
        let (mut conn, _to_leg, mut from_leg) = Conn::mem(false);
        let timers = Timers {
            timer_b: Duration::from_secs(4),
            ..Timers::default()
        };
        let t0 = Instant::now();
        let watcher = tokio::spawn(async move {
            let mut at = Vec::new();
            while let Some(_m) = from_leg.recv().await {
                at.push(t0.elapsed().as_millis());
            }
            at
        });
        let req = invite_bytes("z9hG4bKb");
        let end = invite(
            &mut conn,
            &req,
            "z9hG4bKb",
            &timers,
            RING_TIMEOUT,
            &Acks::default(),
            &mut Hooks::default(),
        )
        .await;
        assert!(matches!(end, End::Timeout { provisional: 0 }));
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
        drop(conn);
        assert_eq!(watcher.await.unwrap(), vec![0, 500, 1500, 3500]);
    }

    #[tokio::test(start_paused = true)]
    async fn reliable_transport_sends_once() {
        let (mut conn, _to_leg, mut from_leg) = Conn::mem(true);
        let req = invite_bytes("z9hG4bKc");
        let end = invite(
            &mut conn,
            &req,
            "z9hG4bKc",
            &Timers::default(),
            RING_TIMEOUT,
            &Acks::default(),
            &mut Hooks::default(),
        )
        .await;
        assert!(matches!(end, End::Timeout { provisional: 0 }));
        assert!(from_leg.try_recv().is_ok());
        assert!(from_leg.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn provisional_stops_retransmissions_final_ends() {
        let (mut conn, to_leg, mut from_leg) = Conn::mem(false);
        let timers = Timers::default();
        let far = tokio::spawn(async move {
            let first = from_leg.recv().await.unwrap();
            let t = Instant::now();
            to_leg.send(response(180, "z9hG4bKd")).unwrap();
            // Unrelated traffic is ignored.
            to_leg.send(response(200, "z9hG4bKother")).unwrap();
            tokio::time::sleep(Duration::from_secs(40)).await;
            let mut resent = 0;
            while from_leg.try_recv().is_ok() {
                resent += 1;
            }
            to_leg.send(response(486, "z9hG4bKd")).unwrap();
            (first.len(), t, resent)
        });
        let req = invite_bytes("z9hG4bKd");
        let end = invite(
            &mut conn,
            &req,
            "z9hG4bKd",
            &timers,
            RING_TIMEOUT,
            &Acks::default(),
            &mut Hooks::default(),
        )
        .await;
        let (_, t, resent) = far.await.unwrap();
        assert_eq!(resent, 0, "no retransmission after a provisional response");
        assert!(t.elapsed() >= Duration::from_secs(40), "past Timer B");
        let End::Final(resp) = end else {
            panic!("{end:?}")
        };
        assert_eq!(resp.message().status(), Some(486));
    }

    #[tokio::test(start_paused = true)]
    async fn ring_timeout_after_provisional() {
        let (mut conn, to_leg, _from_leg) = Conn::mem(false);
        let timers = Timers::default();
        to_leg.send(response(183, "z9hG4bKe")).unwrap();
        let t0 = Instant::now();
        let req = invite_bytes("z9hG4bKe");
        let end = invite(
            &mut conn,
            &req,
            "z9hG4bKe",
            &timers,
            Duration::from_secs(5),
            &Acks::default(),
            &mut Hooks::default(),
        )
        .await;
        assert!(matches!(end, End::Timeout { provisional: 183 }), "{end:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_caps_at_t2() {
        let (mut conn, _to_leg, mut from_leg) = Conn::mem(false);
        let t0 = Instant::now();
        let watcher = tokio::spawn(async move {
            let mut at = Vec::new();
            while let Some(_m) = from_leg.recv().await {
                at.push(t0.elapsed().as_millis());
            }
            at
        });
        let req = invite_bytes("z9hG4bKf");
        let end = non_invite(
            &mut conn,
            &req,
            "z9hG4bKf",
            "BYE",
            &Timers {
                timer_b: Duration::from_secs(16),
                ..Timers::default()
            },
            &Acks::default(),
            &mut VecDeque::new(),
        )
        .await;
        assert!(matches!(end, End::Timeout { .. }));
        drop(conn);
        assert_eq!(
            watcher.await.unwrap(),
            vec![0, 500, 1500, 3500, 7500, 11500, 15500]
        );
    }

    /// RFC 3261 17.1.2.2: once a provisional response came, a non-INVITE
    /// request is sent again every T2.
    #[tokio::test(start_paused = true)]
    async fn non_invite_after_a_provisional_every_t2() {
        let (mut conn, to_leg, mut from_leg) = Conn::mem(false);
        let t0 = Instant::now();
        let watcher = tokio::spawn(async move {
            let mut at = Vec::new();
            while let Some(_m) = from_leg.recv().await {
                at.push(t0.elapsed().as_millis());
            }
            at
        });
        let far = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let trying = String::from_utf8(response(100, "z9hG4bKg"))
                .unwrap()
                .replace("1 INVITE", "1 BYE");
            to_leg.send(trying.into_bytes()).unwrap();
            tokio::time::sleep(Duration::from_mins(1)).await;
            drop(to_leg);
        });
        let req = invite_bytes("z9hG4bKg");
        let end = non_invite(
            &mut conn,
            &req,
            "z9hG4bKg",
            "BYE",
            &Timers::default(),
            &Acks::default(),
            &mut VecDeque::new(),
        )
        .await;
        assert!(matches!(end, End::Timeout { provisional: 100 }), "{end:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(32));
        drop(conn);
        far.abort();
        assert_eq!(
            watcher.await.unwrap(),
            vec![
                0, 500, 1500, 5500, 9500, 13_500, 17_500, 21_500, 25_500, 29_500
            ]
        );
    }
}
