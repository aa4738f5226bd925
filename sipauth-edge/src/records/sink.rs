//! Where call records are written: the store (`sipauth run`), or the
//! control plane (`sipauth edge`), which may fail or not answer, so what
//! it does not take waits in a backlog sent again apart from the writer.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use sipauth_store::Store;
use sipauth_store::calls::insert_many;

use super::{CallRecord, RECORD_BATCH, RECORD_QUEUE};

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
    pub(super) url: String,
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

#[cfg(test)]
pub(crate) mod tests {
    use sipauth_model::Cause;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    pub(in crate::records) fn rec(uuid: &str, status: &str, cause: Cause) -> CallRecord {
        sipauth_store::testing::call_record(uuid, status, cause.name(), cause.code())
    }

    /// A control plane that answers 503 `failures` times, then 204, as a
    /// sink; it hands over the bodies it took.
    pub(crate) async fn control(
        failures: usize,
    ) -> (Sink, tokio::sync::mpsc::UnboundedReceiver<String>) {
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
}
