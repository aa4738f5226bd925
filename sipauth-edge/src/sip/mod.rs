//! The SIP layer under the call logic: what every transaction of the edge
//! shares, server ([`crate::transaction`]) and client
//! ([`crate::outbound::txn`]) alike.
//!
//! [`timers`]: T1, T2, T4 and the timers derived from them, and the one
//! schedule on which a request or a response is sent again.
#![forbid(unsafe_code)]

pub mod timers;

pub use timers::{Retransmit, Timers, wait_until};
