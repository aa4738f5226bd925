//! Customer callbacks for the Plivo-compatible API.
//!
//! * [`signature_v3`] / [`verify_v3`]: the `X-Plivo-Signature-V3` scheme, so
//!   that customers can keep validating our requests with Plivo's SDKs.
//! * [`Client`]: fetches `answer_url` and notifies `hangup_url`, signed, with
//!   timeouts, one retry and a body limit, over kept-alive HTTP/1.1
//!   connections (`transport`).
//! * [`parse_response_xml`]: turns the Plivo XML an `answer_url` returns into
//!   typed [`Action`]s, and [`parse_sip_headers`] / [`render_sip_headers`]
//!   handle the `sipHeaders` attribute.
#![forbid(unsafe_code)]

mod fetch;
mod headers;
mod signature;
mod transport;
mod xml;

pub use fetch::{
    Callback, Client, ClientOptions, ConfigError, FetchError, MAX_BODY_BYTES, Method, NONCE_DIGITS,
    Params, USER_AGENT,
};
pub use headers::{RESERVED_HEADER_PREFIXES, parse_sip_headers, render_sip_headers};
pub use signature::{signature_v3, verify_v3};
pub use xml::{Action, Dial, DialTarget, XmlError, parse_response_xml};
