//! The records Make Call requests store before they are answered, written
//! in groups.
//!
//! A request's 201 waits until its call is in the store, so that reading
//! the call back at once finds it. Written one per request, each costs a
//! statement and the round trips to the store's connection (for SQLite a
//! thread of its own, which preempts the edge's). One task writes instead:
//! what waits when it is free goes in one statement, and each request is
//! answered when its row is written. A request that comes alone (none in
//! the [`LINGER`] before it) is written at once; when requests come closer
//! together than that, one that finds the writer idle waits up to
//! [`LINGER`] for others to share its statement. Requests that came while
//! a group was written go together at once: under load the writer's own
//! pace makes the groups, and waiting would only lengthen each request
//! (and, for a client with a fixed number of connections, lower its
//! rate). A failed group is written again row by row, so one bad row
//! costs no other its write.

use sipauth_store::calls::{CallRecord, Requested, insert_requested};
use sipauth_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

/// Rows written in one statement at most (each takes
/// `calls::VALUES_PER_ROW` values; SQLite takes 32,766 per statement).
const GROUP: usize = 256;
/// Requests waiting for the writer at most; past it a request waits for
/// room.
const QUEUE: usize = 4096;
/// How long a request that finds the writer idle waits for others, when
/// the request before it came less than this earlier. Fewer statements, and
/// the calls of a group move on together, so the edge wakes up once for
/// several. At 2,000 Make Calls a second, alternated runs: without the
/// wait 343 and 346 us of edge CPU per call and setup p50 0.4 ms; 1 ms,
/// 209 to 226 us and 1.9 ms; 2 ms, 177 to 226 us (201 on average) and
/// 2.5 ms; 5 ms, 169 and 175 us and 4.5 ms.
const LINGER: Duration = Duration::from_millis(2);

struct Pending {
    record: CallRecord,
    answer_method: String,
    hangup_url: String,
    written: oneshot::Sender<Result<(), StoreError>>,
}

impl Pending {
    fn row(&self) -> (&CallRecord, Requested<'_>) {
        (
            &self.record,
            Requested {
                answer_method: &self.answer_method,
                hangup_url: &self.hangup_url,
            },
        )
    }
}

/// Where Make Call requests' records go; see the module doc.
pub struct QueuedCalls {
    tx: mpsc::Sender<Pending>,
}

/// Why a record was not written (the store is as it was).
#[derive(Debug)]
pub enum QueueError {
    /// The writer has stopped: the process is ending.
    Stopped,
    Store(StoreError),
}

impl QueuedCalls {
    /// Starts the writer task on `store`.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(GROUP);
            let mut last = None;
            while next_group(&mut rx, &mut group, &mut last).await {
                let rows: Vec<_> = group.iter().map(Pending::row).collect();
                let all = insert_requested(&store, &rows).await;
                drop(rows);
                match all {
                    Ok(()) => {
                        for p in group.drain(..) {
                            let _ = p.written.send(Ok(()));
                        }
                    }
                    Err(e) if group.len() == 1 => {
                        let p = group.pop().expect("one");
                        let _ = p.written.send(Err(e));
                    }
                    Err(e) => {
                        tracing::warn!(rows = group.len(), error = %e, "writing queued calls failed; writing them one by one");
                        for p in group.drain(..) {
                            let one = insert_requested(&store, &[p.row()]).await;
                            let _ = p.written.send(one);
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Stores `record` with its request's columns; returns once it is
    /// written (or failed, leaving the store as it was).
    pub async fn write(
        &self,
        record: CallRecord,
        requested: &Requested<'_>,
    ) -> Result<(), QueueError> {
        let (written, done) = oneshot::channel();
        let pending = Pending {
            record,
            answer_method: requested.answer_method.to_owned(),
            hangup_url: requested.hangup_url.to_owned(),
            written,
        };
        self.tx
            .send(pending)
            .await
            .map_err(|_| QueueError::Stopped)?;
        done.await
            .map_err(|_| QueueError::Stopped)?
            .map_err(QueueError::Store)
    }
}

/// Takes the next group of requests into `group`: those waiting, and when
/// one alone is waiting and the request before it came less than
/// [`LINGER`] earlier (`last`, kept here), those that come within
/// [`LINGER`] of it. False once the channel is closed and empty.
async fn next_group<T>(
    rx: &mut mpsc::Receiver<T>,
    group: &mut Vec<T>,
    last: &mut Option<Instant>,
) -> bool {
    let waiting = rx.recv_many(group, GROUP).await;
    if waiting == 0 {
        return false;
    }
    let first = Instant::now();
    // Several waiting came while the last group was written: the writer
    // is what they wait for, and they go at once.
    if waiting == 1 && last.is_some_and(|t| first.duration_since(t) < LINGER) {
        let until = first + LINGER;
        while group.len() < GROUP {
            let room = GROUP - group.len();
            match tokio::time::timeout_at(until, rx.recv_many(group, room)).await {
                Ok(n) if n > 0 => *last = Some(Instant::now()),
                // Closed (the process stops) or the wait is over.
                _ => break,
            }
        }
    }
    *last = (*last).max(Some(first));
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn stored(store: &Store, uuid: &str) -> bool {
        let mut r = store.read().await.unwrap();
        sipauth_store::calls::TABLE
            .get(&mut r, "MA0001", uuid)
            .await
            .unwrap()
            .is_some()
    }

    fn record(uuid: &str, account: &str) -> CallRecord {
        CallRecord {
            call_uuid: uuid.to_owned(),
            account: account.to_owned(),
            direction: "outbound".to_owned(),
            from_number: "alice".to_owned(),
            to_number: "sip:bob@example.com".to_owned(),
            answer_url: Some("http://127.0.0.1/answer".to_owned()),
            call_status: "queued".to_owned(),
            hangup_cause_name: None,
            hangup_cause_code: None,
            sip_auth_type: None,
            source_ip: None,
            created_at: 1,
            ended_at: None,
        }
    }

    /// A request after a quiet spell is taken at once; one that follows
    /// another closely waits [`LINGER`] for more (the runtime's timers
    /// round up to the next millisecond), and its group takes what comes
    /// in that time; several found waiting are taken at once.
    #[tokio::test(start_paused = true)]
    async fn close_requests_are_grouped_and_none_waits_needlessly() {
        let (tx, mut rx) = mpsc::channel::<u32>(16);
        let (mut group, mut last) = (Vec::new(), None);
        tx.send(1).await.unwrap();
        let start = Instant::now();
        assert!(next_group(&mut rx, &mut group, &mut last).await);
        assert_eq!(
            (group.as_slice(), start.elapsed()),
            ([1].as_slice(), Duration::ZERO)
        );
        group.clear();
        let sender = tx.clone();
        tokio::spawn(async move {
            for i in 3..6 {
                tokio::task::yield_now().await;
                sender.send(i).await.unwrap();
            }
            // Long after the group of 2 to 5: alone again.
            tokio::time::sleep(LINGER * 5).await;
            sender.send(9).await.unwrap();
        });
        tx.send(2).await.unwrap();
        let second = Instant::now();
        assert!(next_group(&mut rx, &mut group, &mut last).await);
        assert_eq!(group, [2, 3, 4, 5]);
        let waited = second.elapsed();
        assert!(waited >= LINGER && waited <= LINGER * 2, "{waited:?}");
        group.clear();
        assert!(next_group(&mut rx, &mut group, &mut last).await);
        assert_eq!(group, [9]);
        assert_eq!(second.elapsed(), LINGER * 5, "taken when it came");
        group.clear();
        // Several waiting (they came while the last group was written):
        // taken at once, though they follow 9 closely.
        tx.send(10).await.unwrap();
        tx.send(11).await.unwrap();
        let third = Instant::now();
        assert!(next_group(&mut rx, &mut group, &mut last).await);
        assert_eq!(
            (group.as_slice(), third.elapsed()),
            ([10, 11].as_slice(), Duration::ZERO)
        );
        drop(tx);
        group.clear();
        assert!(!next_group(&mut rx, &mut group, &mut last).await);
    }

    /// Requests arriving together are written together, each answered for
    /// its own row: one that cannot be written (its account does not
    /// exist) fails alone and leaves no row.
    #[tokio::test]
    async fn concurrent_requests_are_written_and_a_bad_row_fails_alone() {
        let (_dir, store) = sipauth_store::testing::open().await;
        sipauth_store::testing::account(&store, "MA0001").await;
        let queued = Arc::new(QueuedCalls::start(store.clone()));
        let requested = Requested {
            answer_method: "POST",
            hangup_url: "http://127.0.0.1/hangup",
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let queued = queued.clone();
            let account = if i == 37 { "MA-NONE" } else { "MA0001" };
            let r = record(&format!("c{i}"), account);
            tasks.spawn(async move {
                let requested = Requested {
                    answer_method: "POST",
                    hangup_url: "http://127.0.0.1/hangup",
                };
                (i, queued.write(r, &requested).await)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, result) = done.unwrap();
            assert_eq!(result.is_ok(), i != 37, "call {i}: {result:?}");
        }
        for i in 0..100 {
            assert_eq!(stored(&store, &format!("c{i}")).await, i != 37, "call {i}");
        }
        // Alone, a request is written at once.
        queued
            .write(record("solo", "MA0001"), &requested)
            .await
            .unwrap();
        assert!(stored(&store, "solo").await);
    }
}
