//! Where every call's end goes, inbound or outbound: call records (written
//! to the store by `sipauth run`, posted to the control plane by `sipauth
//! edge`, batched off the call path) and the signed callbacks of the
//! account (answer_url, hangup_url, Dial action URLs) through one HTTP
//! client. Records never hold a credential.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use sipauth_callback::{Callback, Method};
use sipauth_model::Cause;
use sipauth_store::Store;
pub use sipauth_store::calls::CallRecord;
use sipauth_store::calls::insert_many;

/// Where call records go: the store (`sipauth run`) or the control plane
/// (`sipauth edge`).
pub enum Sink {
    Store(Store),
    Remote(Arc<Remote>),
}

impl Sink {
    /// The control plane at `url` (its call records endpoint), with the
    /// edge's token.
    #[must_use]
    pub fn remote(url: String, token: String, http: reqwest::Client) -> Self {
        Self::Remote(Arc::new(Remote {
            url,
            token,
            http,
            backlog: std::sync::Mutex::new(Backlog::default()),
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// Writes `records` (a batch the writer took from its queue); failures
    /// are logged with the calls they concern. Returns without waiting on
    /// a control plane that fails (its records are sent again apart), with
    /// the number of records dropped: those past the backlog's bound.
    pub async fn write(&self, records: &[CallRecord]) -> usize {
        match self {
            Self::Store(store) => {
                if let Err(e) = insert_many(store, records).await {
                    // One bad record must not cost the others theirs.
                    tracing::warn!(records = records.len(), error = %e, "writing call records failed; retrying one by one");
                    for r in records {
                        if let Err(e) = insert_many(store, std::slice::from_ref(r)).await {
                            tracing::warn!(call = %r.call_uuid, error = %e, "writing the call record failed");
                        }
                    }
                }
                0
            }
            Self::Remote(remote) => remote.write(records).await,
        }
    }
}

/// A control plane taking call records. A batch it does not take (it
/// fails or does not answer) joins a backlog, as does every batch after it
/// while the backlog is not empty, and a task of its own sends the backlog
/// again, oldest first, [`RECORD_BATCH`] at a time, waiting 0.2 s before
/// the first try and four times longer after each failure, up to 3.2 s.
/// The writer waits for one try at most, the one that finds the control
/// plane failing (a try may take the client's whole timeout), and so do
/// the hangup_urls told after it; records past [`RECORD_QUEUE`] in the
/// backlog are dropped and counted as the writer's queue drops them.
pub struct Remote {
    url: String,
    token: String,
    http: reqwest::Client,
    backlog: std::sync::Mutex<Backlog>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Backlog {
    records: std::collections::VecDeque<CallRecord>,
    /// Whether the task sending the backlog again has been started.
    sending: bool,
}

/// What the control plane made of a batch.
enum Posted {
    Taken,
    /// Refused as it is (4xx): sending it again would not help.
    Refused,
    Failed,
}

impl Remote {
    async fn write(self: &Arc<Self>, records: &[CallRecord]) -> usize {
        let behind = !self
            .backlog
            .lock()
            .expect("records backlog")
            .records
            .is_empty();
        if behind || matches!(self.post(records, 1).await, Posted::Failed) {
            return self.keep(records);
        }
        0
    }

    async fn post(&self, records: &[CallRecord], attempt: u32) -> Posted {
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(records)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Posted::Taken,
            Ok(r) if r.status().is_client_error() => {
                tracing::warn!(status = %r.status(), records = records.len(), "the control plane refused call records");
                Posted::Refused
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), attempt, records = records.len(), "sending call records failed");
                Posted::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = records.len(), "sending call records failed");
                Posted::Failed
            }
        }
    }

    /// Adds `records` to the backlog, within its bound; returns how many
    /// did not fit.
    fn keep(self: &Arc<Self>, records: &[CallRecord]) -> usize {
        let mut backlog = self.backlog.lock().expect("records backlog");
        let room = RECORD_QUEUE.saturating_sub(backlog.records.len());
        backlog.records.extend(records.iter().take(room).cloned());
        if room < records.len() {
            let first = records[room].call_uuid.as_str();
            tracing::error!(
                records = records.len() - room,
                first,
                "call records lost: the control plane has not taken those before them"
            );
        }
        if !backlog.sending {
            backlog.sending = true;
            tokio::spawn(self.clone().send_backlog());
        }
        drop(backlog);
        self.wake.notify_one();
        records.len().saturating_sub(room)
    }

    async fn send_backlog(self: Arc<Self>) {
        // The wait before the next try: none after a batch was taken.
        let mut wait = Some(REMOTE_RETRY);
        let mut attempt = 2;
        loop {
            let chunk: Vec<CallRecord> = {
                let backlog = self.backlog.lock().expect("records backlog");
                backlog.records.iter().take(RECORD_BATCH).cloned().collect()
            };
            if chunk.is_empty() {
                self.wake.notified().await;
                (wait, attempt) = (Some(REMOTE_RETRY), 2);
                continue;
            }
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            match self.post(&chunk, attempt).await {
                Posted::Taken | Posted::Refused => {
                    // Only this task takes from the front.
                    let mut backlog = self.backlog.lock().expect("records backlog");
                    backlog.records.drain(..chunk.len());
                    (wait, attempt) = (None, 2);
                }
                Posted::Failed => {
                    wait = Some(wait.map_or(REMOTE_RETRY, |d| (d * 4).min(REMOTE_RETRY_MAX)));
                    attempt += 1;
                }
            }
        }
    }
}

/// The wait before a batch the control plane did not take is sent again,
/// then four times longer after each failure (0.2, 0.8, 3.2 s), up to
/// [`REMOTE_RETRY_MAX`].
const REMOTE_RETRY: Duration = Duration::from_millis(200);
const REMOTE_RETRY_MAX: Duration = Duration::from_millis(3200);

/// Calls in progress share these.
pub struct Calls {
    pub client: sipauth_callback::Client,
    /// Ended calls waiting for the writer task. Bounded: a flood of denied
    /// INVITEs (with XDP off, say) cannot pile up writes without end.
    ended: tokio::sync::mpsc::Sender<Ended>,
    /// The hangup_urls to tell, once their records are written.
    hangups: Hangups,
    metrics: Arc<crate::metrics::Metrics>,
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

    /// Tells `batch` in a task of its own; what does not fit in the queue
    /// is dropped and counted.
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
            }
        });
        Arc::new(Self {
            client,
            ended: tx,
            hangups,
            metrics,
            outbound,
        })
    }

    /// Queues the record of a call that ended, and the hangup_url to tell
    /// once it is written. When the writer is this far behind, the record
    /// is dropped and counted (`sipauth_call_records_dropped_total`) and
    /// the hangup_url told at once.
    pub fn end(&self, record: CallRecord, hangup: Option<Hangup>) {
        let Err(full) = self.ended.try_send(Ended { record, hangup }) else {
            return;
        };
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn rec(uuid: &str, status: &str, cause: Cause) -> CallRecord {
        CallRecord {
            call_uuid: uuid.to_owned(),
            account: "MA0001".to_owned(),
            direction: "inbound".to_owned(),
            from_number: "alice".to_owned(),
            to_number: "app".to_owned(),
            answer_url: Some("http://127.0.0.1/answer".to_owned()),
            call_status: status.to_owned(),
            hangup_cause_name: Some(cause.name().to_owned()),
            hangup_cause_code: Some(cause.code()),
            sip_auth_type: Some("ip_acl".to_owned()),
            source_ip: Some("192.0.2.1".to_owned()),
            created_at: 1,
            ended_at: Some(2),
        }
    }

    /// A control plane that answers 503 `failures` times, then 204, as a
    /// sink; it hands over the bodies it took.
    async fn control(failures: usize) -> (Sink, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/Edge/Calls", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then the body by Content-Length.
                let body = loop {
                    let k = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break body.to_owned();
                        }
                    }
                };
                let status = if n < failures {
                    "503 Service Unavailable"
                } else {
                    "204 No Content"
                };
                if n >= failures {
                    tx.send(body).unwrap();
                }
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let sink = Sink::remote(url, "edge-token".to_owned(), reqwest::Client::new());
        (sink, rx)
    }

    #[tokio::test]
    async fn remote_records_go_as_one_batch_and_are_sent_again_after_a_failure() {
        let (sink, mut bodies) = control(2).await;
        let batch = [
            rec("a", "completed", Cause::NormalHangup),
            rec("b", "busy", Cause::BusyLine),
        ];
        assert_eq!(sink.write(&batch).await, 0);
        let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
            .await
            .expect("taken on the third try")
            .expect("a body");
        let sent: Vec<CallRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(sent, batch);
        tokio::time::sleep(REMOTE_RETRY * 2).await;
        assert!(bodies.try_recv().is_err(), "taken once");
    }

    /// While the control plane fails, batches wait in the backlog, not in
    /// the writer: a write returns after one try (none when others wait
    /// before it), and the backlog goes in order once the control plane
    /// takes it.
    #[tokio::test]
    async fn a_failing_control_plane_holds_up_no_write_and_gets_the_backlog_in_order() {
        let (sink, mut bodies) = control(3).await;
        let a = [rec("a", "completed", Cause::NormalHangup)];
        let b = [rec("b", "busy", Cause::BusyLine)];
        let started = tokio::time::Instant::now();
        assert_eq!(sink.write(&a).await, 0);
        assert_eq!(sink.write(&b).await, 0);
        assert!(
            started.elapsed() < REMOTE_RETRY,
            "a write waited for a retry"
        );
        let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
            .await
            .expect("taken on the fourth try")
            .expect("a body");
        let sent: Vec<CallRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(sent, [a[0].clone(), b[0].clone()]);
        tokio::time::sleep(REMOTE_RETRY * 2).await;
        assert!(bodies.try_recv().is_err(), "taken once");
    }

    /// The backlog holds [`RECORD_QUEUE`] records at most: what does not
    /// fit is dropped, and the write says how many.
    #[tokio::test]
    async fn the_backlog_is_bounded() {
        let (sink, _bodies) = control(usize::MAX).await;
        let many: Vec<CallRecord> = (0..RECORD_QUEUE + 5)
            .map(|i| rec(&format!("c{i}"), "completed", Cause::NormalHangup))
            .collect();
        assert_eq!(sink.write(&many).await, 5);
        assert_eq!(sink.write(&many[..1]).await, 1, "full");
    }

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
        calls.end(rec("a", "completed", Cause::NormalHangup), Some(hangup));
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
    }
}
