//! ACKs of the edge's stateless answers (RFC 3261 8.2.7: a stateless UAS
//! ignores ACKs). A final non-2xx answer sent without a transaction (a
//! challenge, 404, 400) carries a To-tag that starts with
//! [`STATELESS_TAG`]; the ACK a client sends for it (17.1.1.3) copies
//! that To header. The program drops such ACKs so that they never wake
//! user space, which would only absorb them. The edge's other tags are
//! lower-case hex and never start with the prefix.
//!
//! The rule is strict on purpose: an ACK it does not recognise (a header
//! folded or spaced oddly, a To header past [`SCAN_LEN`]) goes up,
//! and user space absorbs it as before. Only the To header is read, so a
//! caller's own tags (From) never matter.

/// The start of every To-tag of a stateless answer: not a hex digit,
/// so no other tag of the edge starts with it.
pub const STATELESS_TAG: &str = match core::str::from_utf8(PREFIX) {
    Ok(s) => s,
    Err(_) => panic!("the prefix is ASCII"),
};
const PREFIX: &[u8; 3] = b"sl-";

/// Bytes of a datagram the program reads to find the To header.
pub const SCAN_LEN: usize = 1024;
/// The request line's start.
pub const METHOD: &[u8; 4] = b"ACK ";
/// The slot of `SIPAUTH_TAIL` that holds the program walking ACKs.
pub const TAIL_SLOT: u32 = 0;
/// The names of that program and of its map.
pub const PROGRAM: &str = "sipauth_ack";
pub const TAIL_NAME: &str = "SIPAUTH_TAIL";

#[inline]
const fn lower(b: u8) -> u8 {
    b.to_ascii_lowercase()
}

/// Whether a header line starting at `at` is the To header: `To` or
/// compact `t`, then `:` or white space (RFC 3261 7.3.1, 20.39).
#[inline]
fn is_to(msg: &[u8], at: usize) -> bool {
    let byte = |k: usize| msg.get(at + k).map_or(0, |&b| lower(b));
    if byte(0) != b't' {
        return false;
    }
    let end = if byte(1) == b'o' { 2 } else { 1 };
    matches!(byte(end), b':' | b' ' | b'\t')
}

/// Whether `;tag=` and the stateless prefix start at `at` (the `;`).
#[inline]
fn stateless_tag_at(msg: &[u8], at: usize) -> bool {
    let byte = |k: usize| msg.get(at + k).copied().unwrap_or(0);
    byte(0) == b';'
        && lower(byte(1)) == b't'
        && lower(byte(2)) == b'a'
        && lower(byte(3)) == b'g'
        && byte(4) == b'='
        && byte(5) == PREFIX[0]
        && byte(6) == PREFIX[1]
        && byte(7) == PREFIX[2]
}

/// Whether `msg` starts with the ACK method.
#[must_use]
#[inline]
pub fn is_ack(msg: &[u8]) -> bool {
    msg.get(..METHOD.len()) == Some(METHOD.as_slice())
}

/// What [`Scan::step`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read on.
    Next,
    /// The stateless tag in the To header.
    Found,
    /// The headers (or the bytes read) ended without it.
    Done,
}

/// The walk over an ACK's headers, one byte at a time, so that the
/// program can run it in `bpf_loop` (a plain loop over a thousand bytes
/// is more than the verifier will walk).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scan {
    /// The line being read belongs to the To header.
    in_to: bool,
}

impl Scan {
    /// Reads byte `i` of `msg`, an ACK's first bytes.
    #[must_use]
    #[inline]
    pub fn step(&mut self, msg: &[u8], i: usize) -> Step {
        if i >= SCAN_LEN {
            return Step::Done;
        }
        let Some(&b) = msg.get(i) else {
            return Step::Done;
        };
        if b == b'\n' {
            match msg.get(i + 1) {
                // The end of the headers.
                Some(b'\r' | b'\n') | None => return Step::Done,
                // A continuation line belongs to the header before.
                Some(b' ' | b'\t') => {}
                // The To header ended without the tag: a message
                // has one To header (RFC 3261 20).
                Some(_) if self.in_to => return Step::Done,
                Some(_) => self.in_to = is_to(msg, i + 1),
            }
        } else if self.in_to && b == b';' && stateless_tag_at(msg, i) {
            return Step::Found;
        }
        Step::Next
    }
}

/// Whether `msg`, the start of a UDP payload (at most [`SCAN_LEN`]
/// bytes are read), is an ACK of a stateless answer: the method is
/// `ACK` and its To header (or a continuation line of it) has a tag
/// that starts with [`STATELESS_TAG`].
#[must_use]
pub fn of_stateless_answer(msg: &[u8]) -> bool {
    if !is_ack(msg) {
        return false;
    }
    let mut scan = Scan::default();
    for i in 0..SCAN_LEN {
        match scan.step(msg, i) {
            Step::Next => {}
            Step::Found => return true,
            Step::Done => return false,
        }
    }
    false
}
