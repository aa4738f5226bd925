//! The sipauth agent: the SIP edge, its XDP program's loader and map sync,
//! and the HTTP surface. `main.rs` is the `sipauth` command line.

pub mod config;
pub mod control;
pub mod edge;
pub mod http;
pub mod run;
