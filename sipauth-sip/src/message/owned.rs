//! [`OwnedMessage`]: a parsed message that keeps a copy of its bytes and
//! the places [`super::parse`] found in them.

use std::ops::Range;

use super::{Header, Message, Parsed, StartLine};
use crate::names::Kind;

/// Where `part` lies in `base`, of which it is a slice.
fn range_in(base: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// The start line of an [`OwnedMessage`], as places in its header section.
#[derive(Debug, Clone)]
enum OwnedStart {
    Request {
        method: Range<usize>,
        uri: Range<usize>,
        version: Range<usize>,
    },
    Response {
        version: Range<usize>,
        code: u16,
        reason: Range<usize>,
    },
}

/// A parsed message that owns a copy of its bytes: for a message acted on
/// after the buffer it arrived in is reused (a request answered later, a
/// dialog's request handed to another task). It is made from a
/// [`Message`] without parsing again, and [`OwnedMessage::message`] gives
/// the same accessors back, again without parsing: the places of the start
/// line and of every header found by [`parse`] are kept.
#[derive(Debug, Clone)]
pub struct OwnedMessage {
    head: Box<str>,
    body: Box<[u8]>,
    start: OwnedStart,
    headers: Vec<(Range<usize>, Range<usize>, Kind)>,
}

impl OwnedMessage {
    /// The message, borrowing this copy. Its [`Message::span`] is the
    /// whole copy: the start line is at 0.
    #[must_use]
    pub fn message(&self) -> Message<'_> {
        let head = &*self.head;
        let start = match &self.start {
            OwnedStart::Request {
                method,
                uri,
                version,
            } => StartLine::Request {
                method: &head[method.clone()],
                uri: &head[uri.clone()],
                version: &head[version.clone()],
            },
            OwnedStart::Response {
                version,
                code,
                reason,
            } => StartLine::Response {
                version: &head[version.clone()],
                code: *code,
                reason: &head[reason.clone()],
            },
        };
        Message {
            start,
            headers: self
                .headers
                .iter()
                .map(|(name, value, kind)| Header {
                    name: &head[name.clone()],
                    value: &head[value.clone()],
                    kind: *kind,
                })
                .collect(),
            body: &self.body,
            head,
            offset: 0,
            len: head.len() + self.body.len(),
            parsed: Parsed::default(),
        }
    }
}

impl From<&Message<'_>> for OwnedMessage {
    fn from(m: &Message<'_>) -> Self {
        let head = m.head;
        let start = match m.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => OwnedStart::Request {
                method: range_in(head, method),
                uri: range_in(head, uri),
                version: range_in(head, version),
            },
            StartLine::Response {
                version,
                code,
                reason,
            } => OwnedStart::Response {
                version: range_in(head, version),
                code,
                reason: range_in(head, reason),
            },
        };
        Self {
            head: head.into(),
            body: m.body.into(),
            start,
            headers: m
                .headers
                .iter()
                .map(|h| (range_in(head, h.name), range_in(head, h.value), h.kind))
                .collect(),
        }
    }
}
