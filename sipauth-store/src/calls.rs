//! `calls`: a record of every call, inbound or outbound, allowed or
//! denied. Every write to the table goes through one statement (see
//! [`insert_many`]). Records never hold a credential.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{FromRow as _, Store, StoreError, Table, columns};

/// Read by account; the key is `call_uuid`.
pub const TABLE: Table<CallRecord> = Table::new("calls", "call_uuid", "account");

row! {
    /// One call record, as stored and as sent by remote edges.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct CallRecord {
        pub call_uuid: String,
        pub account: String,
        pub direction: String,
        pub from_number: String,
        pub to_number: String,
        pub answer_url: Option<String>,
        pub call_status: String,
        pub hangup_cause_name: Option<String>,
        pub hangup_cause_code: Option<i64>,
        pub sip_auth_type: Option<String>,
        pub source_ip: Option<String>,
        pub created_at: i64,
        pub ended_at: Option<i64>,
    }
}

/// A new call's CallUUID. Time-ordered (RFC 9562 version 7: 48 bits of
/// Unix milliseconds, then 74 random bits), so that the table's key index
/// grows at its end as calls are recorded: a batch of records touches the
/// last index page or two, not a random page per call as random UUIDs do.
#[must_use]
pub fn new_call_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What a Make Call request keeps with its call beside the record: set
/// when the request is stored, never changed by the call's later records.
#[derive(Debug, Clone)]
pub struct Requested<'a> {
    pub answer_method: &'a str,
    pub hangup_url: &'a str,
}

/// The columns a written row has beside the record's own, in the order
/// of the statement's values after them.
const REQUESTED: &str = "answer_method, hangup_url";
/// How many values a written row has: 15 (SQLite takes 32,766 values per
/// statement, PostgreSQL 65,535).
pub const VALUES_PER_ROW: usize = CallRecord::COLUMNS.len() + 2;

/// Inserts or replaces `records` in one statement (one round trip to the
/// store): a new record is inserted; the final record of a call the API
/// stored first (Make Call) updates the outcome and keeps the request's
/// own columns. When a call appears twice, its last record counts.
pub async fn insert_many(store: &Store, records: &[CallRecord]) -> Result<(), StoreError> {
    upsert(store, records.iter().map(|r| (r, None))).await
}

/// Stores the records of Make Call requests (queued, not ended), each with
/// its request's own columns, through the same one statement as
/// [`insert_many`].
pub async fn insert_requested(
    store: &Store,
    rows: &[(&CallRecord, Requested<'_>)],
) -> Result<(), StoreError> {
    upsert(store, rows.iter().map(|(r, q)| (*r, Some(q)))).await
}

/// The one statement that writes `calls`.
async fn upsert<'r>(
    store: &Store,
    rows: impl Iterator<Item = (&'r CallRecord, Option<&'r Requested<'r>>)>,
) -> Result<(), StoreError> {
    let n = rows.size_hint().0;
    let mut last: HashMap<&str, (&CallRecord, Option<&Requested<'_>>)> = HashMap::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    for (r, q) in rows {
        if last.insert(&r.call_uuid, (r, q)).is_none() {
            order.push(r.call_uuid.as_str());
        }
    }
    if order.is_empty() {
        return Ok(());
    }
    let mut sql = format!(
        "INSERT INTO calls ({}, {REQUESTED}) VALUES ",
        columns::<CallRecord>()
    );
    for i in 0..order.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..VALUES_PER_ROW {
            if c > 0 {
                sql.push_str(", ");
            }
            store
                .backend()
                .push_param(&mut sql, i * VALUES_PER_ROW + c + 1);
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (call_uuid) DO UPDATE SET call_status = excluded.call_status, \
         hangup_cause_name = excluded.hangup_cause_name, hangup_cause_code = excluded.hangup_cause_code, \
         sip_auth_type = excluded.sip_auth_type, source_ip = excluded.source_ip, ended_at = excluded.ended_at",
    );
    let mut q = sqlx::query(&sql);
    for uuid in order {
        let (r, requested) = last[uuid];
        q = q
            .bind(&r.call_uuid)
            .bind(&r.account)
            .bind(&r.direction)
            .bind(&r.from_number)
            .bind(&r.to_number)
            .bind(&r.answer_url)
            .bind(&r.call_status)
            .bind(&r.hangup_cause_name)
            .bind(r.hangup_cause_code)
            .bind(&r.sip_auth_type)
            .bind(&r.source_ip)
            .bind(r.created_at)
            .bind(r.ended_at)
            .bind(requested.map(|q| q.answer_method))
            .bind(requested.map(|q| q.hangup_url));
    }
    store.write_records(q).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::super::testing;
    use super::*;

    /// CallUUIDs are UUIDs of version 7 and come in ascending order, as
    /// text too (the key index's order).
    #[test]
    fn call_uuids_are_time_ordered() {
        let ids: Vec<String> = (0..2000).map(|_| new_call_uuid()).collect();
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(u.get_version_num(), 7, "{id}");
            assert_eq!(id, &u.hyphenated().to_string(), "lower-case, hyphenated");
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
    }

    /// Call `uuid` of account `acct`, read as the API reads it.
    async fn get(store: &Store, acct: &str, uuid: &str) -> Result<Option<CallRecord>, StoreError> {
        TABLE.get(&mut store.read().await?, acct, uuid).await
    }

    fn rec(uuid: &str, status: &str, code: i64) -> CallRecord {
        crate::testing::call_record(uuid, status, &format!("cause-{code}"), code)
    }

    /// How many calls the table holds.
    async fn count(store: &Store) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM calls")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    /// The Make Call columns of call `uuid`.
    async fn requested(store: &Store, uuid: &str) -> (Option<String>, Option<String>) {
        let r = sqlx::query("SELECT answer_method, hangup_url FROM calls WHERE call_uuid = $1")
            .bind(uuid)
            .fetch_one(store.pool())
            .await
            .unwrap();
        (r.try_get(0).unwrap(), r.try_get(1).unwrap())
    }

    #[tokio::test]
    async fn records_are_written_in_one_batch_last_one_wins() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA0001").await;
        let mut batch: Vec<CallRecord> = (0..600)
            .map(|i| rec(&format!("c{i}"), "completed", 4000))
            .collect();
        // The same call twice in a batch: its last record counts.
        batch.push(rec("c7", "busy", 4010));
        insert_many(&store, &batch).await.unwrap();
        // A later record of a call updates its outcome.
        insert_many(&store, &[rec("c8", "failed", 4020)])
            .await
            .unwrap();
        insert_many(&store, &[]).await.unwrap();
        assert_eq!(count(&store).await, 600);
        let get = async |u: &str| get(&store, "MA0001", u).await.unwrap().unwrap();
        assert_eq!(get("c7").await, rec("c7", "busy", 4010));
        assert_eq!(get("c8").await, rec("c8", "failed", 4020));
        assert_eq!(get("c9").await, rec("c9", "completed", 4000));
        assert_eq!(requested(&store, "c9").await, (None, None));
        assert_eq!(self::get(&store, "MA0002", "c9").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_final_record_of_a_requested_call_keeps_the_request_columns() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA0001").await;
        let queued = CallRecord {
            direction: "outbound".to_owned(),
            call_status: "queued".to_owned(),
            hangup_cause_name: None,
            hangup_cause_code: None,
            sip_auth_type: None,
            source_ip: None,
            created_at: 10,
            ended_at: None,
            ..rec("m1", "", 0)
        };
        let req = Requested {
            answer_method: "GET",
            hangup_url: "http://127.0.0.1/hangup",
        };
        insert_requested(&store, &[(&queued, req.clone())])
            .await
            .unwrap();
        assert_eq!(get(&store, "MA0001", "m1").await.unwrap().unwrap(), queued);
        let want = (
            Some("GET".to_owned()),
            Some("http://127.0.0.1/hangup".to_owned()),
        );
        assert_eq!(requested(&store, "m1").await, want);
        // The edge's record of how it ended: the outcome changes; who,
        // when and where the request sent it stay.
        let ended = CallRecord {
            direction: "outbound".to_owned(),
            from_number: "changed".to_owned(),
            answer_url: None,
            created_at: 99,
            ended_at: Some(20),
            ..rec("m1", "completed", 4000)
        };
        insert_many(&store, std::slice::from_ref(&ended))
            .await
            .unwrap();
        let got = get(&store, "MA0001", "m1").await.unwrap().unwrap();
        assert_eq!(
            got,
            CallRecord {
                from_number: queued.from_number.clone(),
                answer_url: queued.answer_url.clone(),
                created_at: 10,
                ..ended
            }
        );
        assert_eq!(requested(&store, "m1").await, want);
    }

    #[tokio::test]
    async fn a_batch_with_a_bad_record_writes_none_of_it() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA0001").await;
        let mut orphan = rec("c2", "completed", 4000);
        orphan.account = "MA0404".to_owned();
        let batch = [rec("c1", "completed", 4000), orphan];
        assert!(matches!(
            insert_many(&store, &batch).await,
            Err(StoreError::Db(_))
        ));
        assert_eq!(get(&store, "MA0001", "c1").await.unwrap(), None);
        insert_many(&store, &batch[..1]).await.unwrap();
        assert!(get(&store, "MA0001", "c1").await.unwrap().is_some());
    }

    /// Records' writers share their connection: statements from several
    /// tasks at once (the records writer, Make Call's, the control plane's
    /// endpoint for remote edges) run one at a time, and each lands; a
    /// failed one leaves the connection usable for the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_at_once_share_the_records_connection() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA0001").await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for b in 0..25 {
                        let batch: Vec<CallRecord> = (0..4)
                            .map(|i| rec(&format!("w{w}-{b}-{i}"), "completed", 4000))
                            .collect();
                        insert_many(&store, &batch).await.unwrap();
                        let mut orphan = rec(&format!("x{w}-{b}"), "completed", 4000);
                        orphan.account = "MA0404".to_owned();
                        assert!(insert_many(&store, &[orphan]).await.is_err());
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(count(&store).await, 4 * 25 * 4);
    }
}
