//! Zero-copy SIP message parsing and response building (RFC 3261).
//!
//! [`parse`] reads one complete message (a datagram, or one message cut from
//! a stream by [`frame`]) into a [`Message`] that borrows the buffer: header
//! values are slices of it, found again on demand by name (case-insensitive,
//! compact forms equivalent to long names). Typed accessors — [`Message::call_id`],
//! [`Message::cseq`], [`Message::top_via`], [`Message::from`], ... — check a
//! header's grammar when it is read, so a message with one bad header can
//! still be answered with a 400 that copies the good ones.
//!
//! Quoted strings are returned as the raw text between the quotes (escapes
//! are not removed), and folded header lines keep their line breaks in the
//! raw value; see [`unfold`].
//!
//! [`build::response`] writes a response to a parsed request.
#![forbid(unsafe_code)]

mod auth;
pub mod build;
mod date;
mod error;
mod frame;
mod lex;
mod message;
mod nameaddr;
mod names;
mod uri;
mod via;

pub use auth::{DigestChallenge, DigestCredentials, parse_challenge, parse_credentials};
pub use error::ParseError;
pub use frame::{MAX_HEADER_SECTION, frame};
pub use lex::unfold;
pub use message::{Message, OwnedMessage, StartLine, parse};
pub use nameaddr::{NameAddr, parse_name_addr};
pub use names::canonical_name;
pub use uri::{SipUri, parse_uri};
pub use via::{Via, parse_via};
