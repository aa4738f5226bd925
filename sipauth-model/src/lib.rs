//! The values every layer of sipauth speaks in: the control plane's
//! snapshot, a Make Call request, and the causes a call ends with. No I/O,
//! no SQL, no kernel: the store, the kernel maps, the edge and the control
//! plane all depend on this crate and it on none of them.
#![forbid(unsafe_code)]

mod cause;
mod make_call;
mod registration;
pub mod snapshot;

pub use self::cause::Cause;
pub use self::make_call::{Credentials, DEFAULT_TIME_LIMIT, MakeCall, Secret};
pub use self::registration::{Registration, Registrations};
pub use self::snapshot::Snapshot;
