//! Where every call's end goes, inbound or outbound: call records (written
//! to the store by `sipauth run`, posted to the control plane by `sipauth
//! edge`, batched off the call path) and the signed callbacks of the
//! account (answer_url, hangup_url, Dial action URLs) through one HTTP
//! client. Records never hold a credential.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use sipauth_callback::{Callback, Method};
use sipauth_model::Cause;
pub use sipauth_store::calls::CallRecord;

mod sink;
#[cfg(test)]
pub(crate) use sink::tests::control as test_control_plane;
pub use sink::{Remote, Sink};

/// Calls in progress share these.
pub struct Calls {
    pub client: sipauth_callback::Client,
    /// Ended calls waiting for the writer task. Bounded: a flood of denied
    /// INVITEs (with XDP off, say) cannot pile up writes without end.
    ended: tokio::sync::mpsc::Sender<Ended>,
    /// The hangup_urls to tell, once their records are written.
    hangups: Hangups,
    /// Ended calls queued or in the writer's hands, not yet written (and
    /// their hangup_urls not yet handed to [`Hangups`]).
    unwritten: Arc<AtomicUsize>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// What every outbound leg (Make Call and Dial) shares.
    pub outbound: crate::outbound::Settings,
}

/// A call's end as the writer takes it: its record, and the hangup_url to
/// tell once the record is written.
struct Ended {
    record: CallRecord,
    hangup: Option<Hangup>,
}

/// A hangup_url to tell how a call ended: the call's callback `params`,
/// to which HangupCauseName and HangupCauseCode are added, signed with
/// `auth_token`.
pub struct Hangup {
    pub url: String,
    pub method: Method,
    pub params: sipauth_callback::Params,
    pub auth_token: String,
    pub call_uuid: String,
    pub cause: Cause,
}

/// Ended calls queued for writing at most.
const RECORD_QUEUE: usize = 10_000;
/// Records written in one statement at most. A batch is written when it
/// is this full or [`RECORD_LINGER`] after its first record, whichever
/// comes first: under load it fills in a few tens of milliseconds, and a
/// statement this size keeps the worker from other work for a short while
/// only (with 512 rows, setup p99 at 4,000 calls/s was 4.5 and 5.8 ms in
/// two runs; with 128, 1.6 to 1.8 ms in three). Each row takes
/// `calls::VALUES_PER_ROW` values, far below the most a statement takes
/// (SQLite 32,766, PostgreSQL 65,535).
const RECORD_BATCH: usize = 128;
/// How long the writer waits for more records after the first of a batch
/// before it writes: one statement per batch instead of one per call (each
/// a round trip to SQLite's worker thread, which preempts the edge's own).
/// At a few hundred calls per second a batch holds this long's calls,
/// and the edge wakes up for its records about once per batch. A record
/// reaches the store, and its hangup_url is told, this much later at most.
const RECORD_LINGER: Duration = Duration::from_millis(100);
/// hangup_urls waiting to be told or in flight at most. When their
/// servers answer slower than calls end, further hangup_urls are dropped
/// and counted (`sipauth_hangup_callbacks_dropped_total`), as records are
/// when their writer falls behind.
const HANGUP_QUEUE: usize = 10_000;
/// A batch's hangup_urls in flight at once at most: at the usual pace a
/// batch is told on the few connections the pool keeps per origin.
const HANGUPS_PER_BATCH: usize = 16;
/// hangup_urls in flight at once at most, all batches and servers
/// together; 256 keep up with 5,000 calls/s to a server 50 ms away. The
/// callback pool caps connections per origin too, but a request waiting
/// for one of those spends its timeout waiting; one waiting here has not
/// started, so batches behind a slow server wait their turn instead of
/// timing out.
const HANGUPS_IN_FLIGHT: usize = 256;

/// Tells hangup_urls, a batch at a time, within [`HANGUP_QUEUE`] and
/// [`HANGUPS_IN_FLIGHT`].
#[derive(Clone)]
struct Hangups {
    client: sipauth_callback::Client,
    metrics: Arc<crate::metrics::Metrics>,
    /// Told or being told, not yet done.
    pending: Arc<AtomicUsize>,
    in_flight: Arc<tokio::sync::Semaphore>,
    limits: HangupLimits,
}

/// [`HANGUP_QUEUE`], [`HANGUPS_PER_BATCH`] and [`HANGUPS_IN_FLIGHT`], or a
/// test's own.
#[derive(Clone, Copy)]
struct HangupLimits {
    queue: usize,
    per_batch: usize,
    in_flight: usize,
}

impl Hangups {
    fn new(
        client: sipauth_callback::Client,
        metrics: Arc<crate::metrics::Metrics>,
        limits: HangupLimits,
    ) -> Self {
        Self {
            client,
            metrics,
            pending: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.in_flight)),
            limits,
        }
    }

    /// Tells `batch` in a task of its own, the calls under way served
    /// between one request and the next; what does not fit in the queue is
    /// dropped and counted.
    fn tell(&self, mut batch: Vec<Hangup>) {
        let fits = |pending: usize| batch.len().min(self.limits.queue.saturating_sub(pending));
        let before = self
            .pending
            .fetch_update(Relaxed, Relaxed, |p| Some(p + fits(p)))
            .unwrap_or_else(|p| p);
        let room = fits(before);
        if room < batch.len() {
            let dropped = (batch.len() - room) as u64;
            batch.truncate(room);
            let before = self.metrics.hangups_dropped.fetch_add(dropped, Relaxed);
            let after = before + dropped;
            // Said at the first drop and each time the count doubles.
            if before == 0 || before.ilog2() != after.ilog2() {
                tracing::warn!(
                    dropped = after,
                    "hangup_url queue full (their servers answer slower than calls end); hangup_urls dropped"
                );
            }
        }
        if batch.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            futures_util::stream::iter(batch)
                // Each request is started after a yield, which the
                // runtime wakes only once it has polled its sockets and
                // run what they woke: a batch's requests (written to the
                // kernel one after the other, some 15 us each) do not
                // hold up, for a millisecond at a time, the calls under
                // way.
                .then(|h| async {
                    tokio::task::yield_now().await;
                    h
                })
                .for_each_concurrent(this.limits.per_batch, |h| async {
                    // At the usual pace there is room, taken without
                    // polling an acquire. Awaiting `acquire` alone measured
                    // dearer at 4,000 calls/s in two alternated sittings
                    // (means 127 and 113 us per call against 120 and 103),
                    // both one way though within this machine's noise.
                    // The semaphore is never closed.
                    let _slot = match this.in_flight.try_acquire() {
                        Ok(slot) => Ok(slot),
                        Err(_) => this.in_flight.acquire().await,
                    };
                    notify_hangup(&this.client, h).await;
                    this.pending.fetch_sub(1, Relaxed);
                })
                .await;
        });
    }
}

impl Calls {
    /// Starts the task that writes records to `sink`: what arrives within
    /// [`RECORD_LINGER`] of a batch's first record, up to
    /// [`RECORD_BATCH`], in one statement. The batch's hangup_urls are
    /// told once it is written (or its writing failed; for a remote edge,
    /// once its one try failed), so a customer who looks a call up when
    /// told of its end finds it.
    pub fn new(
        client: sipauth_callback::Client,
        sink: Sink,
        metrics: Arc<crate::metrics::Metrics>,
        outbound: crate::outbound::Settings,
    ) -> Arc<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Ended>(RECORD_QUEUE);
        let hangups = Hangups::new(
            client.clone(),
            metrics.clone(),
            HangupLimits {
                queue: HANGUP_QUEUE,
                per_batch: HANGUPS_PER_BATCH,
                in_flight: HANGUPS_IN_FLIGHT,
            },
        );
        let notifier = hangups.clone();
        let counted = metrics.clone();
        let unwritten = Arc::new(AtomicUsize::new(0));
        let written = unwritten.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RECORD_BATCH);
            let mut records = Vec::with_capacity(RECORD_BATCH);
            while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
                let until = tokio::time::Instant::now() + RECORD_LINGER;
                while batch.len() < RECORD_BATCH {
                    let room = RECORD_BATCH - batch.len();
                    let more = rx.recv_many(&mut batch, room);
                    match tokio::time::timeout_at(until, more).await {
                        Ok(n) if n > 0 => {}
                        // Closed (the edge stops) or the linger is over.
                        _ => break,
                    }
                }
                let taken = batch.len();
                let mut hangups = Vec::new();
                for e in batch.drain(..) {
                    records.push(e.record);
                    hangups.extend(e.hangup);
                }
                let lost = sink.write(&records).await;
                if lost > 0 {
                    counted
                        .records_dropped
                        .fetch_add(lost as u64, std::sync::atomic::Ordering::Relaxed);
                }
                records.clear();
                if !hangups.is_empty() {
                    notifier.tell(hangups);
                }
                // Release: a reader that sees the count drop sees the
                // batch's hangup_urls counted as pending.
                written.fetch_sub(taken, Release);
            }
        });
        Arc::new(Self {
            client,
            ended: tx,
            hangups,
            unwritten,
            metrics,
            outbound,
        })
    }

    /// Queues the record of a call that ended, and the hangup_url to tell
    /// once it is written. When the writer is this far behind, the record
    /// is dropped and counted (`sipauth_call_records_dropped_total`) and
    /// the hangup_url told at once.
    pub fn end(&self, record: CallRecord, hangup: Option<Hangup>) {
        self.unwritten.fetch_add(1, Relaxed);
        let Err(full) = self.ended.try_send(Ended { record, hangup }) else {
            return;
        };
        self.unwritten.fetch_sub(1, Relaxed);
        let n = self
            .metrics
            .records_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_power_of_two() {
            tracing::warn!(dropped = n + 1, "call record queue full; records dropped");
        }
        if let Some(h) = full.into_inner().hangup {
            self.hangups.tell(vec![h]);
        }
    }

    /// Queues the record of a call that has no hangup_url to tell.
    pub fn record(&self, record: CallRecord) {
        self.end(record, None);
    }

    /// Whether every call that ended has its record written (or given up
    /// on: dropped, or left to a remote sink's backlog) and its hangup_url
    /// told (or failed): what a stopping edge waits for.
    #[must_use]
    pub fn settled(&self) -> bool {
        self.unwritten.load(Acquire) == 0 && self.hangups.pending.load(Relaxed) == 0
    }
}

async fn notify_hangup(client: &sipauth_callback::Client, h: Hangup) {
    let Hangup {
        url,
        method,
        mut params,
        auth_token,
        call_uuid,
        cause,
    } = h;
    params.push(("HangupCauseName", cause.name().into()));
    params.push(("HangupCauseCode", cause.code().to_string().into()));
    let cb = Callback {
        url: &url,
        method,
        params,
        auth_token: &auth_token,
    };
    if let Err(e) = client.notify(&cb).await {
        tracing::info!(call = %call_uuid, error = %e, "hangup_url failed");
    }
}

#[cfg(test)]
mod tests {
    use super::sink::tests::{control, rec};
    use super::*;

    /// Records queued one by one, each a little after the other, reach the
    /// sink together: one write for the calls that end within the linger.
    #[tokio::test]
    async fn records_ending_close_together_are_written_in_one_batch() {
        let (sink, mut bodies) = control(0).await;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let calls = crate::tests::test_calls(sink, metrics.clone());
        let sent = [
            rec("a", "completed", Cause::NormalHangup),
            rec("b", "busy", Cause::BusyLine),
            rec("c", "completed", Cause::NormalHangup),
        ];
        for r in &sent {
            calls.record(r.clone());
            tokio::time::sleep(RECORD_LINGER / 8).await;
        }
        let body = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
            .await
            .expect("written within the linger")
            .expect("a body");
        let got: Vec<CallRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(got, sent, "one batch, in order");
        tokio::time::sleep(RECORD_LINGER * 2).await;
        assert!(bodies.try_recv().is_err(), "nothing written twice");
        assert_eq!(
            metrics
                .records_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    /// A hangup_url server that never answers holds no more hangup_urls
    /// than may be in flight at once, whatever the batches; the queue
    /// behind them fills, and what comes after is dropped and counted,
    /// not gathered without end.
    #[tokio::test]
    async fn a_silent_hangup_server_holds_a_bounded_number_and_the_rest_is_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hangup", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                count.fetch_add(1, Relaxed);
            }
        });
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let hangups = Hangups::new(
            sipauth_callback::Client::new(Duration::from_secs(30)),
            metrics.clone(),
            HangupLimits {
                queue: 5,
                per_batch: 16,
                in_flight: 2,
            },
        );
        let batch = |from: usize, n: usize| -> Vec<Hangup> {
            (from..from + n)
                .map(|i| Hangup {
                    url: url.clone(),
                    method: Method::Post,
                    params: Vec::new(),
                    auth_token: "token".to_owned(),
                    call_uuid: format!("c{i}"),
                    cause: Cause::NormalHangup,
                })
                .collect()
        };
        hangups.tell(batch(0, 3));
        hangups.tell(batch(3, 1));
        tokio::time::timeout(Duration::from_secs(5), async {
            while accepted.load(Relaxed) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("two hangup_urls in flight");
        assert_eq!(metrics.hangups_dropped.load(Relaxed), 0);
        // One more fits; of the next three, none.
        hangups.tell(batch(4, 1));
        hangups.tell(batch(5, 3));
        assert_eq!(metrics.hangups_dropped.load(Relaxed), 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(accepted.load(Relaxed), 2, "two in flight at most");
    }

    /// The hangup_url hears of a call only once its record is written: a
    /// customer who looks the call up then finds it.
    #[tokio::test]
    async fn a_hangup_url_is_told_after_the_call_record_is_written() {
        let (sink, mut bodies) = control(0).await;
        let Sink::Remote(remote) = &sink else {
            unreachable!("control() is a remote sink")
        };
        let url = remote.url.clone();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let calls = crate::tests::test_calls(sink, metrics);
        let hangup = Hangup {
            url,
            method: Method::Post,
            params: vec![("CallUUID", "a".into())],
            auth_token: "token".to_owned(),
            call_uuid: "a".to_owned(),
            cause: Cause::NormalHangup,
        };
        assert!(calls.settled(), "nothing ended yet");
        calls.end(rec("a", "completed", Cause::NormalHangup), Some(hangup));
        assert!(!calls.settled(), "the record is queued");
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), bodies.recv())
                .await
                .expect("a request within 5 s")
                .expect("a body")
        };
        let first = next().await;
        let got: Vec<CallRecord> = serde_json::from_str(&first).expect("the record first");
        assert_eq!(got, [rec("a", "completed", Cause::NormalHangup)]);
        let second = next().await;
        assert!(second.contains("CallUUID=a"), "{second}");
        assert!(
            second.contains(&format!("HangupCauseName={}", Cause::NormalHangup.name())),
            "{second}"
        );
        // Settled (what a stopping edge waits for) once the hangup_url
        // has answered.
        crate::tests::until("settled once the hangup_url answered", || calls.settled()).await;
    }
}
