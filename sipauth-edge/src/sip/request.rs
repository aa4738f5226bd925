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

use sipauth_sip::{Message, OwnedMessage};

use super::transaction::{Key, Seen, Transactions};
use crate::transport::Replier;

/// The edge's To-tags (RFC 3261 8.2.6.2): a keyed hash of the Call-ID, the
/// From tag and the top Via branch, so every transmission of a request
/// gets the same tag, also when it is answered anew. An answer sent
/// without a transaction has the hash behind
/// [`sipauth_common::ack::STATELESS_TAG`], by which the XDP program knows
/// the ACK it draws and drops it (a stateless UAS ignores ACKs, 8.2.7).
#[derive(Clone, Default)]
pub struct ToTags(std::hash::RandomState);

impl ToTags {
    /// The tag of an answer within a transaction: 16 hex digits.
    #[must_use]
    pub fn tag(&self, msg: &Message<'_>) -> String {
        format!("{:016x}", self.hash(msg))
    }

    /// The tag of an answer sent without a transaction.
    #[must_use]
    pub fn stateless(&self, msg: &Message<'_>) -> String {
        format!(
            "{}{:016x}",
            sipauth_common::ack::STATELESS_TAG,
            self.hash(msg)
        )
    }

    fn hash(&self, msg: &Message<'_>) -> u64 {
        let mut h = self.0.build_hasher();
        msg.call_id().ok().hash(&mut h);
        msg.from().ok().and_then(|f| f.tag).hash(&mut h);
        msg.top_via().ok().and_then(|v| v.branch).hash(&mut h);
        h.finish()
    }
}

/// The one place a response is written (RFC 3261 8.2.6): to a request
/// from a source, with the edge's To-tag when the request's To has none,
/// and extra headers then a body. Every answer of the edge is made here:
/// those of [`ServerRequest`], the refusals of [`super::check`], and an
/// outbound leg's answers to the far end's requests inside the leg's
/// dialog.
pub use sipauth_sip::build::response;

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
        let tag = self.to.tags.stateless(&self.msg);
        let bytes = self.response_tagged(code, reason, Some(&tag), extra, b"");
        self.to
            .txns
            .respond_stateless(&self.to.key, bytes, &self.to.replier);
    }

    fn response(&self, code: u16, reason: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let tag = (code > 100).then(|| self.to_tag());
        self.response_tagged(code, reason, tag.as_deref(), extra, body)
    }

    fn response_tagged(
        &self,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<u8> {
        response(&self.msg, code, reason, self.to.src, tag, extra, body)
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

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;

    const SRC: &str = "192.0.2.1:5060";

    fn invite(branch: &str) -> Vec<u8> {
        format!(
            "INVITE sip:app@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:a@192.0.2.1>;tag=ft\r\nTo: <sip:app@192.0.2.10>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The request as the edge makes it from a datagram.
    fn request<'m>(
        raw: &'m [u8],
        replier: &Replier,
        txns: &Arc<Transactions>,
        tags: &ToTags,
    ) -> ServerRequest<'m> {
        let msg = sipauth_sip::parse(raw).unwrap();
        let key = Key::of(&msg).unwrap();
        ServerRequest::new(
            msg,
            key,
            SRC.parse().unwrap(),
            replier.clone(),
            txns.clone(),
            tags.clone(),
        )
    }

    /// The ACK a client sends for a final non-2xx `response` (RFC 3261
    /// 17.1.1.3): the request's headers, the response's To.
    fn client_ack(response: &str) -> String {
        let to = response
            .lines()
            .find(|l| l.starts_with("To:"))
            .expect("a To header");
        format!(
            "ACK sip:app@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP {SRC};branch=z9hG4bKx\r\n\
             From: <sip:pbx@example.com>;tag=f1\r\n{to}\r\nCall-ID: c1\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn sent(rx: &mut UnboundedReceiver<Vec<u8>>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answers_itself_once_and_a_retransmission_gets_the_same_answer() {
        let (replier, mut rx) = Replier::channel();
        let (txns, tags) = (Arc::new(Transactions::default()), ToTags::default());
        let raw = invite("z9hG4bKonce");
        let req = request(&raw, &replier, &txns, &tags);
        assert!(matches!(req.arrive(), Seen::New));
        req.respond(486, "Busy Here", &[], b"");
        let first = sent(&mut rx);
        assert_eq!(first.len(), 1);
        assert!(
            first[0].starts_with("SIP/2.0 486 Busy Here\r\n"),
            "{}",
            first[0]
        );
        let tag = format!("To: <sip:app@192.0.2.10>;tag={}\r\n", req.to_tag());
        assert!(first[0].contains(&tag), "{}", first[0]);
        assert_eq!(txns.len(), 1);
        // Its ACK ends the transaction: the XDP program lets it up.
        let ack = client_ack(&first[0]);
        assert!(!sipauth_common::ack::of_stateless_answer(ack.as_bytes()));
        // No Timer G without a provisional: nothing while nobody asks.
        tokio::time::advance(std::time::Duration::from_secs(40)).await;
        tokio::task::yield_now().await;
        assert!(sent(&mut rx).is_empty());
        // The same datagram again: answered from the transaction, not judged.
        let again = request(&raw, &replier, &txns, &tags);
        assert!(matches!(again.arrive(), Seen::Retransmission));
        assert_eq!(sent(&mut rx), first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stateless_challenge_leaves_no_transaction() {
        let (replier, mut rx) = Replier::channel();
        let (txns, tags) = (Arc::new(Transactions::default()), ToTags::default());
        let raw = invite("z9hG4bKchal");
        let challenge = [("Proxy-Authenticate", "Digest realm=\"example.com\"")];
        let req = request(&raw, &replier, &txns, &tags);
        assert!(matches!(req.arrive(), Seen::New));
        req.respond_stateless(407, "Proxy Authentication Required", &challenge);
        let first = sent(&mut rx);
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"));
        assert!(first[0].contains("Proxy-Authenticate: Digest realm=\"example.com\"\r\n"));
        assert!(txns.is_empty());
        // Its To-tag is the stateless one, by which the XDP program knows
        // the ACK and drops it.
        let tag = format!(
            ";tag={}{}\r\n",
            sipauth_common::ack::STATELESS_TAG,
            req.to_tag()
        );
        assert!(first[0].contains(&tag), "{}", first[0]);
        let ack = client_ack(&first[0]);
        assert!(sipauth_common::ack::of_stateless_answer(ack.as_bytes()));
        // Its retransmission is a new request, and the same answer (the
        // same To-tag) comes of it.
        let again = request(&raw, &replier, &txns, &tags);
        assert!(matches!(again.arrive(), Seen::New));
        again.respond_stateless(407, "Proxy Authentication Required", &challenge);
        assert_eq!(sent(&mut rx), first);
        assert_eq!(again.to_tag(), req.to_tag());
    }

    #[tokio::test(start_paused = true)]
    async fn an_owned_request_answers_in_the_same_transaction_after_its_buffer_is_gone() {
        let (replier, mut rx) = Replier::channel();
        let (txns, tags) = (Arc::new(Transactions::default()), ToTags::default());
        let mut raw = invite("z9hG4bKlater");
        let req = request(&raw, &replier, &txns, &tags);
        assert!(matches!(req.arrive(), Seen::New));
        req.respond(100, "Trying", &[], b"");
        let tag = req.to_tag();
        let owned = req.to_owned_request();
        drop(req);
        raw.fill(b'x');
        let later = owned.request();
        assert_eq!(later.method(), "INVITE");
        assert_eq!(later.to_tag(), tag);
        let ok = later.respond_kept(200, "OK", &[("Contact", "<sip:app@192.0.2.10>")], b"");
        let got = sent(&mut rx);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("SIP/2.0 100 Trying\r\n"));
        // A 100 carries no To-tag; the final does.
        assert!(
            got[0].contains("To: <sip:app@192.0.2.10>\r\n"),
            "{}",
            got[0]
        );
        assert_eq!(got[1].as_bytes(), ok.as_slice());
        assert!(got[1].contains(&format!(";tag={tag}\r\n")), "{}", got[1]);
        // A retransmission of the INVITE gets the 200 again.
        let raw = invite("z9hG4bKlater");
        assert!(matches!(
            request(&raw, &replier, &txns, &tags).arrive(),
            Seen::Retransmission
        ));
        assert_eq!(sent(&mut rx), [got[1].clone()]);
    }

    fn invite_in(call_id: &str) -> Vec<u8> {
        format!(
            "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=f\r\nTo: <sip:b@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_to_tag_is_sixteen_hex_digits_the_same_for_every_transmission() {
        let tags = ToTags::default();
        let (one, again, other) = (invite_in("c1"), invite_in("c1"), invite_in("c2"));
        let tag = tags.tag(&sipauth_sip::parse(&one).unwrap());
        assert_eq!(tag.len(), 16);
        assert!(
            tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{tag}"
        );
        assert_eq!(tags.tag(&sipauth_sip::parse(&again).unwrap()), tag);
        assert_ne!(tags.tag(&sipauth_sip::parse(&other).unwrap()), tag);
    }
}
