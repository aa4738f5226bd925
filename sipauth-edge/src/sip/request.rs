//! One request the edge received, as the layers above see it: the parsed
//! message, its server transaction, its source and the way back, and the
//! means to answer it (RFC 3261 8.2.6, 17.2).
//!
//! A [`ServerRequest`] is made once per datagram or stream frame, from the
//! message parsed once. It answers itself:
//! - [`ServerRequest::respond`] within its transaction (17.2.1, 17.2.2): the
//!   response is remembered and sent again to each retransmission of the
//!   request; a final non-2xx to an INVITE over UDP after a provisional is
//!   retransmitted until the ACK (Timer G), see [`super::transaction`];
//! - [`ServerRequest::respond_stateless`] as a stateless UAS would (8.2.7):
//!   sent once and the transaction forgotten, for answers with no effect
//!   but themselves (challenges, 404, 405, OPTIONS, 481), so that a request
//!   from a forged source costs one reply.
//!
//! Every response but 100 carries the edge's To-tag (8.2.6.2), the same for
//! every transmission of the same request ([`ToTags`]). Every response
//! leaves through the request's [`Replier`], which counts it and meters it
//! to unproven sources ([`crate::egress`]).
//!
//! A request answered after its datagram's buffer is reused (an INVITE let
//! in, a request of a bridged caller's dialog) is kept as an
//! [`OwnedRequest`]: a copy of the message that is not parsed again.
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use sipauth_sip::{Message, OwnedMessage, build};

use super::transaction::{Key, Seen, Transactions};
use crate::transport::Replier;

/// The edge's To-tags (RFC 3261 8.2.6.2): a keyed hash of the Call-ID, the
/// From tag and the top Via branch, so every transmission of a request
/// gets the same tag, also when it is answered anew.
#[derive(Clone, Default)]
pub struct ToTags(std::hash::RandomState);

impl ToTags {
    #[must_use]
    pub fn tag(&self, msg: &Message<'_>) -> String {
        let mut h = self.0.build_hasher();
        msg.call_id().ok().hash(&mut h);
        msg.from().ok().and_then(|f| f.tag).hash(&mut h);
        msg.top_via().ok().and_then(|v| v.branch).hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// Where the answers to a request go and what remembers them.
#[derive(Clone)]
struct Answering {
    key: Key,
    src: SocketAddr,
    replier: Replier,
    txns: Arc<Transactions>,
    tags: ToTags,
}

/// A request received by the edge, parsed once, with its transaction and
/// its way back.
pub struct ServerRequest<'m> {
    msg: Message<'m>,
    to: Answering,
}

// === impl ServerRequest ===

impl<'m> ServerRequest<'m> {
    /// `msg` is a request that passed [`super::check::request`]; `key` its
    /// transaction key.
    #[must_use]
    pub fn new(
        msg: Message<'m>,
        key: Key,
        src: SocketAddr,
        replier: Replier,
        txns: Arc<Transactions>,
        tags: ToTags,
    ) -> Self {
        Self {
            msg,
            to: Answering {
                key,
                src,
                replier,
                txns,
                tags,
            },
        }
    }

    #[must_use]
    pub fn msg(&self) -> &Message<'m> {
        &self.msg
    }

    /// The request method.
    #[must_use]
    pub fn method(&self) -> &'m str {
        self.msg.method().unwrap_or_default()
    }

    #[must_use]
    pub fn src(&self) -> SocketAddr {
        self.to.src
    }

    /// The way back: the packet's source over UDP, the connection over TCP.
    #[must_use]
    pub fn replier(&self) -> &Replier {
        &self.to.replier
    }

    /// The To-tag of the edge's responses to this request.
    #[must_use]
    pub fn to_tag(&self) -> String {
        self.to.tags.tag(&self.msg)
    }

    /// Finds the request's transaction, or starts it when it is new: a
    /// retransmission gets the last response again (RFC 3261 17.2.3).
    pub fn arrive(&self) -> Seen {
        self.to
            .txns
            .arrive(&self.to.key, self.method() == "ACK", &self.to.replier)
    }

    /// Answers within the transaction: remembered for retransmissions of
    /// the request, and a final non-2xx to an INVITE after a provisional
    /// one is sent again until its ACK.
    pub fn respond(&self, code: u16, reason: &str, extra: &[(&str, &str)], body: &[u8]) {
        let bytes = self.response(code, reason, extra, body);
        self.to
            .txns
            .respond(&self.to.key, code, bytes, &self.to.replier);
    }

    /// As [`ServerRequest::respond`], and returns what was sent: a 2xx to
    /// an INVITE that its UAS core sends again until the ACK (RFC 3261
    /// 13.3.1.4).
    pub fn respond_kept(
        &self,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<u8> {
        let bytes = self.response(code, reason, extra, body);
        self.to
            .txns
            .respond(&self.to.key, code, bytes.clone(), &self.to.replier);
        bytes
    }

    /// A final answer with no effect but itself (a challenge, 404, 405,
    /// 481): sent once and the transaction forgotten (RFC 3261 8.2.7); a
    /// retransmission of the request is judged again, to the same effect.
    pub fn respond_stateless(&self, code: u16, reason: &str, extra: &[(&str, &str)]) {
        let bytes = self.response(code, reason, extra, b"");
        self.to
            .txns
            .respond_stateless(&self.to.key, bytes, &self.to.replier);
    }

    fn response(&self, code: u16, reason: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let tag = (code > 100).then(|| self.to_tag());
        build::response(
            &self.msg,
            code,
            reason,
            self.to.src,
            tag.as_deref(),
            extra,
            body,
        )
    }

    /// A copy that outlives the received buffer, not parsed again.
    #[must_use]
    pub fn to_owned_request(&self) -> OwnedRequest {
        OwnedRequest {
            msg: OwnedMessage::from(&self.msg),
            to: self.to.clone(),
        }
    }
}

/// A [`ServerRequest`] kept beyond its datagram: answered later, or by
/// another task.
pub struct OwnedRequest {
    msg: OwnedMessage,
    to: Answering,
}

// === impl OwnedRequest ===

impl OwnedRequest {
    /// The request again, borrowing this copy.
    #[must_use]
    pub fn request(&self) -> ServerRequest<'_> {
        ServerRequest {
            msg: self.msg.message(),
            to: self.to.clone(),
        }
    }

    #[must_use]
    pub fn replier(&self) -> &Replier {
        &self.to.replier
    }
}

impl std::fmt::Debug for OwnedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedRequest")
            .field("src", &self.to.src)
            .finish_non_exhaustive()
    }
}
