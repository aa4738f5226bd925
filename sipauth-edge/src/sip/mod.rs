//! The SIP layer under the call logic (RFC 3261): what the edge does with
//! a message before any call logic sees it, and the only place a response
//! is written.
//!
//! - [`check`]: what a request must be before it is judged (8.1.1, 8.2.1,
//!   8.2.2.1, 18.3) and the one refusal it gets when it is not.
//! - [`transaction`]: server transactions (17.2): retransmissions of a
//!   request answered from the transaction, Timer G after a provisional.
//! - [`request`]: [`ServerRequest`], one received request parsed once,
//!   with its transaction and way back, which answers itself (8.2.6,
//!   8.2.7, 17.2).
//! - [`dialog`]: the dialog table (12), matched once before method
//!   dispatch; in-dialog requests go to the dialog's owner.
//! - [`timers`]: T1, T2, T4 and the timers derived from them, and the one
//!   schedule on which a request or a response is sent again, for server
//!   and client ([`crate::outbound::txn`]) transactions alike.
//!
//! Leaving the edge, every response passes [`crate::egress`]: counted, and
//! metered to sources that have not proven themselves (26.1.5).
#![forbid(unsafe_code)]

pub(crate) mod check;
pub mod dialog;
pub mod request;
pub mod timers;
pub mod transaction;

pub use request::{OwnedRequest, ServerRequest, ToTags, response};
pub use timers::{Retransmit, Timers, wait_until};
