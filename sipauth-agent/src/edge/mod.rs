//! The SIP edge: what each request gets.
//!
//! For now the edge answers OPTIONS with 200, INVITEs from locked-out
//! sources with 403 and other INVITEs with 404; the application lookup and
//! authentication come with the control plane.

pub mod lockout;
pub mod transport;
pub mod view;

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use sipauth_sip::{Message, build};

use crate::metrics::Metrics;
use lockout::Lockouts;

/// Methods the edge implements, for `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

pub struct Edge {
    pub lockouts: Arc<Lockouts>,
    pub metrics: Arc<Metrics>,
    /// The snapshot requests are judged against.
    pub view: view::View,
    /// Keys the To-tags: the same request gets the same tag, so a
    /// retransmission gets the same response.
    tag_key: std::hash::RandomState,
}

// === impl Edge ===

impl Edge {
    #[must_use]
    pub fn new(lockouts: Arc<Lockouts>, metrics: Arc<Metrics>, view: view::View) -> Self {
        Self {
            lockouts,
            metrics,
            view,
            tag_key: std::hash::RandomState::new(),
        }
    }

    /// Handles one message from `src`; returns the response to send, if any.
    #[must_use]
    pub fn handle(&self, data: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let msg = match sipauth_sip::parse(data) {
            Ok(msg) => msg,
            Err(e) => {
                // Without a parsed message there is no Via to answer to.
                self.metrics.malformed.fetch_add(1, Relaxed);
                self.metrics.dropped.fetch_add(1, Relaxed);
                tracing::debug!(%src, error = %e, "unparseable SIP message dropped");
                return None;
            }
        };
        let Some(method) = msg.method() else {
            self.metrics.stray_responses.fetch_add(1, Relaxed);
            return None;
        };
        self.metrics.request(method);
        if let Err(e) = check_request(&msg) {
            self.metrics.malformed.fetch_add(1, Relaxed);
            if msg.top_via().is_err() || method == "ACK" {
                self.metrics.dropped.fetch_add(1, Relaxed);
                tracing::debug!(%src, error = %e, "malformed request dropped");
                return None;
            }
            tracing::debug!(%src, error = %e, "malformed request");
            let reason = format!("Bad Request ({e})");
            return Some(self.respond(&msg, src, 400, &reason, &[]));
        }
        let (code, extra): (u16, &[(&str, &str)]) = match method {
            "ACK" => return None,
            "OPTIONS" => (200, &[("Allow", ALLOW), ("Accept", "application/sdp")]),
            "INVITE" if self.lockouts.is_locked(src.ip()) => (403, &[]),
            "INVITE" | "REGISTER" => (404, &[]),
            "BYE" | "CANCEL" => (481, &[]),
            _ => (405, &[("Allow", ALLOW)]),
        };
        Some(self.respond(&msg, src, code, build::reason_phrase(code), extra))
    }

    fn respond(
        &self,
        msg: &Message<'_>,
        src: SocketAddr,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        self.metrics.response(code);
        let tag = self.to_tag(msg);
        build::response(msg, code, reason, src, Some(&tag), extra, b"")
    }

    fn to_tag(&self, msg: &Message<'_>) -> String {
        let mut h = self.tag_key.build_hasher();
        msg.call_id().ok().hash(&mut h);
        msg.from().ok().and_then(|f| f.tag).hash(&mut h);
        msg.top_via().ok().and_then(|v| v.branch).hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// What RFC 3261 (8.1.1) requires of every request before it is judged.
fn check_request(msg: &Message<'_>) -> Result<(), sipauth_sip::ParseError> {
    msg.top_via()?;
    msg.from()?;
    msg.to()?;
    msg.call_id()?;
    let (_, cseq_method) = msg.cseq()?;
    msg.max_forwards()?;
    if Some(cseq_method) != msg.method() {
        return Err(sipauth_sip::ParseError::CSeqMethodMismatch);
    }
    Ok(())
}
