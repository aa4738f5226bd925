//! The edge's current snapshot, and the tasks that keep it current.
//!
//! Requests read the view through a `watch` channel: a snapshot is applied
//! by one send, so no request is judged against half of one.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use sipauth_model::snapshot::{Index, Snapshot};

pub type View = watch::Receiver<Arc<Index>>;

/// Where the view comes from and goes to.
pub struct Views {
    tx: watch::Sender<Arc<Index>>,
}

impl Default for Views {
    fn default() -> Self {
        Self::new()
    }
}

impl Views {
    #[must_use]
    pub fn new() -> Self {
        Self {
            tx: watch::channel(Arc::new(Index::default())).0,
        }
    }

    #[must_use]
    pub fn subscribe(&self) -> View {
        self.tx.subscribe()
    }

    /// Applies `snap` unless the view already has it or a newer one.
    pub fn apply(&self, snap: Snapshot) -> bool {
        let version = snap.version;
        let applied = self.tx.send_if_modified(|cur| {
            if snap.version > cur.version() {
                *cur = Arc::new(Index::new(snap));
                true
            } else {
                false
            }
        });
        if applied {
            tracing::info!(version, "snapshot applied");
        }
        applied
    }

    #[must_use]
    pub fn current(&self) -> Arc<Index> {
        self.tx.borrow().clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("control plane: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control plane answered {0}")]
    Status(u16),
    #[error("snapshot: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The file the last snapshot is kept in.
#[must_use]
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("snapshot.json")
}

/// Loads the snapshot kept by an earlier run, if any.
#[must_use]
pub fn load_persisted(dir: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(state_file(dir)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable kept snapshot");
            None
        }
    }
}

/// Writes the snapshot atomically (temporary file, then rename).
fn persist(dir: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("snapshot.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // It holds HA1 values and auth tokens.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(json)?;
    f.sync_all()?;
    std::fs::rename(&tmp, state_file(dir))
}

/// Follows a remote control plane by long poll, keeping each snapshot on
/// disk. Errors are retried with a growing pause; the view stays as it is.
pub async fn follow_remote(base: String, token: String, state_dir: PathBuf, views: Arc<Views>) {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(40))
        .build()
        .expect("HTTP client");
    let url = format!("{}/v1/Edge/Snapshot", base.trim_end_matches('/'));
    let mut pause = Duration::from_millis(200);
    loop {
        let after = views.current().version();
        match poll_once(&client, &url, &token, after).await {
            Ok(Some((snap, json))) => {
                if views.apply(snap)
                    && let Err(e) = persist(&state_dir, &json)
                {
                    tracing::warn!(error = %e, dir = %state_dir.display(), "keeping the snapshot failed");
                }
                pause = Duration::from_millis(200);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "following the control plane failed; keeping the last snapshot");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn poll_once(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    after: u64,
) -> Result<Option<(Snapshot, Vec<u8>)>, FollowError> {
    let r = client
        .get(url)
        .query(&[("after", after)])
        .bearer_auth(token)
        .send()
        .await?;
    match r.status().as_u16() {
        200 => {
            let bytes = r.bytes().await?.to_vec();
            let snap: Snapshot = serde_json::from_slice(&bytes)?;
            Ok(Some((snap, bytes)))
        }
        304 => Ok(None),
        s => Err(FollowError::Status(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_snapshots_replace_older_ones_only() {
        let v = Views::new();
        let mut rx = v.subscribe();
        assert!(v.apply(Snapshot {
            version: 3,
            ..Default::default()
        }));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(!v.apply(Snapshot {
            version: 2,
            ..Default::default()
        }));
        assert!(!v.apply(Snapshot {
            version: 3,
            ..Default::default()
        }));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(v.current().version(), 3);
    }

    #[test]
    fn persisted_snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_persisted(dir.path()).is_none());
        let s = Snapshot {
            version: 9,
            ..Default::default()
        };
        persist(dir.path(), &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(load_persisted(dir.path()).unwrap().version, 9);
    }
}
