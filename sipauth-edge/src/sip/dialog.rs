//! The edge's dialogs as a UAS (RFC 3261 12): the one table a request is
//! matched against before method dispatch, and what a dialog's owner is
//! handed.
//!
//! A dialog is found by Call-ID and the remote (caller's) tag and is the
//! edge's when the local tag is the one the edge gave (12.2.2). ACK, BYE,
//! re-INVITE, INFO and UPDATE belong to a dialog by their To-tag; a CANCEL
//! belongs to the INVITE it cancels (9.2), found by Call-ID and From tag;
//! a response belongs to a request the edge sent inside the dialog.
//! [`is_in_dialog`] says which requests are matched here rather than
//! dispatched by method: one that finds no dialog gets 481 (12.2.2, 9.2),
//! except an ACK, which is never answered.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use sipauth_sip::Message;
use tokio::sync::mpsc;

use super::request::{OwnedRequest, ServerRequest};

/// Whether `method` (of `msg`) is matched against the dialog table rather
/// than dispatched: ACK, BYE, CANCEL, INFO, UPDATE, and an INVITE with a
/// To-tag (a re-INVITE).
#[must_use]
pub fn is_in_dialog(method: &str, msg: &Message<'_>) -> bool {
    match method {
        "ACK" | "BYE" | "CANCEL" | "INFO" | "UPDATE" => true,
        "INVITE" => msg.to().ok().and_then(|t| t.tag).is_some(),
        _ => false,
    }
}

/// What a dialog's owner is handed.
#[derive(Debug)]
pub enum Event {
    /// The ACK of the 2xx, with its body (the answer to an offer the
    /// 2xx carried).
    Ack(Vec<u8>),
    /// BYE (already answered 200).
    Bye,
    /// CANCEL of the INVITE (already answered 200).
    Cancel,
    /// A re-INVITE (its transaction started; the owner answers it).
    Reinvite(Box<OwnedRequest>),
    /// An INFO or UPDATE (its transaction started; the owner answers it).
    Request(Box<OwnedRequest>),
    /// A response to a request the edge sent inside the dialog (a
    /// re-INVITE or a BYE).
    Response {
        code: u16,
        method: String,
        cseq: u32,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

struct Entry {
    /// The edge's To-tag towards the caller.
    to_tag: String,
    tx: mpsc::UnboundedSender<Event>,
}

/// The edge's dialogs by Call-ID and the caller's tag.
#[derive(Default)]
pub struct Dialogs(Mutex<HashMap<(String, String), Entry>>);

// === impl Dialogs ===

impl Dialogs {
    /// Adds the dialog of the INVITE with `call_id` and `from_tag`, whose
    /// responses carry `to_tag`; what belongs to it comes out of the
    /// receiver.
    pub(crate) fn insert(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
    ) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.lock().expect("dialogs").insert(
            (call_id.to_owned(), from_tag.to_owned()),
            Entry {
                to_tag: to_tag.to_owned(),
                tx,
            },
        );
        rx
    }

    pub(crate) fn remove(&self, call_id: &str, from_tag: &str) {
        self.0
            .lock()
            .expect("dialogs")
            .remove(&(call_id.to_owned(), from_tag.to_owned()));
    }

    /// The one match of a request for which [`is_in_dialog`] holds: true
    /// when a dialog (or, for a CANCEL, its INVITE's) took it.
    pub fn dispatch(&self, req: &ServerRequest<'_>) -> bool {
        match req.method() {
            "INVITE" | "INFO" | "UPDATE" => self.in_dialog(req),
            _ => self.route(req.msg()),
        }
    }

    /// Hands a request inside a dialog that its owner answers (re-INVITE,
    /// INFO, UPDATE) to the owner; true when one took it (false: no dialog
    /// of ours, 481).
    fn in_dialog(&self, req: &ServerRequest<'_>) -> bool {
        let msg = req.msg();
        let (Ok(call_id), Ok(from), Ok(to)) = (msg.call_id(), msg.from(), msg.to()) else {
            return false;
        };
        let map = self.0.lock().expect("dialogs");
        let Some(e) = map.get(&(call_id.to_owned(), from.tag.unwrap_or_default().to_owned()))
        else {
            return false;
        };
        if to.tag != Some(e.to_tag.as_str()) {
            return false;
        }
        let r = Box::new(req.to_owned_request());
        let event = if msg.method() == Some("INVITE") {
            Event::Reinvite(r)
        } else {
            Event::Request(r)
        };
        e.tx.send(event).is_ok()
    }

    /// Hands a message (ACK, BYE, CANCEL, or a response to the edge's own
    /// requests) to its dialog; true when one took it.
    pub fn route(&self, msg: &Message<'_>) -> bool {
        let Ok(call_id) = msg.call_id() else {
            return false;
        };
        let from_tag = msg.from().ok().and_then(|f| f.tag).unwrap_or_default();
        let to_tag = msg.to().ok().and_then(|t| t.tag);
        // Requests of the caller carry its tag in From; responses to the
        // edge's requests carry it in To.
        let (caller_tag, edge_tag) = match msg.method() {
            None => (to_tag.unwrap_or_default(), Some(from_tag)),
            Some(_) => (from_tag, to_tag),
        };
        let map = self.0.lock().expect("dialogs");
        let Some(e) = map.get(&(call_id.to_owned(), caller_tag.to_owned())) else {
            return false;
        };
        let dialog_matches = edge_tag == Some(e.to_tag.as_str());
        let event = match msg.method() {
            None if dialog_matches => {
                let (Some(code), Ok((cseq, method))) = (msg.status(), msg.cseq()) else {
                    return false;
                };
                Event::Response {
                    code,
                    method: method.to_owned(),
                    cseq,
                    content_type: msg.header("Content-Type").map(str::to_owned),
                    body: msg.body().to_vec(),
                }
            }
            Some("ACK") if dialog_matches => Event::Ack(msg.body().to_vec()),
            Some("BYE") if dialog_matches => Event::Bye,
            Some("CANCEL") => Event::Cancel,
            _ => return false,
        };
        e.tx.send(event).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, branch: &str, to_tag: Option<&str>) -> Vec<u8> {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:app@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:caller@192.0.2.1>;tag=ct\r\nTo: <sip:app@192.0.2.10>{to_tag}\r\n\
             Call-ID: c1\r\nCSeq: 2 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn routes_only_the_bridged_callers_dialog() {
        let dialogs = Dialogs::default();
        let mut rx = dialogs.insert("c1", "ct", "et");
        let routed = |raw: &[u8]| dialogs.route(&sipauth_sip::parse(raw).unwrap());
        assert!(routed(&request("CANCEL", "z9hG4bKx", None)));
        assert!(matches!(rx.try_recv(), Ok(Event::Cancel)));
        assert!(routed(&request("ACK", "z9hG4bKx", Some("et"))));
        assert!(matches!(rx.try_recv(), Ok(Event::Ack(_))));
        assert!(routed(&request("BYE", "z9hG4bKx", Some("et"))));
        assert!(matches!(rx.try_recv(), Ok(Event::Bye)));
        // Another dialog's tag, or no tag at all: not this call.
        assert!(!routed(&request("BYE", "z9hG4bKx", Some("other"))));
        assert!(!routed(&request("BYE", "z9hG4bKx", None)));
        // The caller's answer to the edge's BYE (From is the edge's side).
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKy\r\n\
            From: <sip:app@192.0.2.10>;tag=et\r\nTo: <sip:caller@192.0.2.1>;tag=ct\r\n\
            Call-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        assert!(routed(resp));
        assert!(matches!(
            rx.try_recv(),
            Ok(Event::Response { code: 200, ref method, .. }) if method == "BYE"
        ));
        dialogs.remove("c1", "ct");
        assert!(!routed(&request("BYE", "z9hG4bKx", Some("et"))));
    }
}
