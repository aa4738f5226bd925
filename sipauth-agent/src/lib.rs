//! The `sipauth` binary's own parts: the config file as written
//! ([`config`], which imports nothing of the other crates), where its
//! settings become the components' settings and the components are started
//! ([`run`]), and the edge's HTTP surface ([`http`]: metrics and the
//! operator endpoints), and how logs are written ([`logging`]). `main.rs` is
//! the command line.

pub mod config;
pub mod http;
pub mod logging;
pub mod run;
