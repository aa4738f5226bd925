//! The kernel side of sipauth as user space sees it: [`maps`] loads the XDP
//! program, pins and reuses its maps and is the only module that touches
//! aya; [`lockout`] is the table of locked-out sources (the program's map,
//! or this process's memory with XDP off) under the one lockout policy
//! ([`maps::LockoutPolicy`]) and the never-lock list.

pub mod lockout;
pub mod maps;
