//! Whole-message parsing (stream framing is in `frame.rs`).

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::ParseError;
use crate::lex::{is_lws, is_token, is_token_byte, split_top_opt, trim_lws, unfold};
use crate::nameaddr::{NameAddr, parse_name_addr};
use crate::names::{self, Kind};
use crate::uri::{SipUri, check_any_uri, parse_uri};
use crate::via::{Via, parse_via};

mod owned;
pub use owned::OwnedMessage;

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        /// The method (case-sensitive token).
        method: &'a str,
        /// The Request-URI as written.
        uri: &'a str,
        /// The version, e.g. `SIP/2.0`.
        version: &'a str,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response {
        /// The version, e.g. `SIP/2.0`.
        version: &'a str,
        /// The three-digit status code.
        code: u16,
        /// The reason phrase (possibly empty).
        reason: &'a str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Header<'a> {
    name: &'a str,
    value: &'a str,
    kind: Kind,
}

/// A parsed SIP message borrowing the received buffer.
///
/// Header values are slices of the buffer. A folded value (continuation
/// lines) keeps its line breaks; every typed accessor treats them as white
/// space, and [`Message::header_unfolded`] / [`crate::unfold`] give the value
/// with each fold joined by a single SP.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    start: StartLine<'a>,
    headers: Vec<Header<'a>>,
    body: &'a [u8],
    /// The start line and header section, through the empty line.
    head: &'a str,
    /// Offset of the start line in the buffer (after leading CRLFs).
    offset: usize,
    /// Length of the message in the buffer, from `offset`, including the body.
    len: usize,
    /// The headers every request is asked for several times (by
    /// [`Message::validate`], the transaction key, the dialog match, the
    /// method's handler), parsed at the first asking.
    parsed: Parsed<'a>,
}

/// Results of header accessors, kept so that each header is parsed once.
#[derive(Debug, Clone, Default)]
struct Parsed<'a> {
    from: OnceLock<Result<NameAddr<'a>, ParseError>>,
    to: OnceLock<Result<NameAddr<'a>, ParseError>>,
    top_via: OnceLock<Result<Via<'a>, ParseError>>,
    request_uri: OnceLock<Option<Result<SipUri<'a>, ParseError>>>,
}

fn syntax(line: usize, reason: &'static str) -> ParseError {
    ParseError::HeaderSyntax { line, reason }
}

fn start_err(reason: &'static str) -> ParseError {
    ParseError::StartLine { reason }
}

pub(crate) fn skip_crlfs(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

pub(crate) fn find_blank_line(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n")
}

/// `SIP/1*DIGIT.1*DIGIT`, "SIP" case-insensitive.
fn is_version(v: &str) -> bool {
    let Some((proto, num)) = v.split_once('/') else {
        return false;
    };
    let Some((major, minor)) = num.split_once('.') else {
        return false;
    };
    proto.eq_ignore_ascii_case("SIP")
        && !major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit())
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    if line.starts_with("SIP/")
        || line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let (version, rest) = line
            .split_once(' ')
            .ok_or(start_err("missing status code"))?;
        if !is_version(version) {
            return Err(start_err("invalid SIP version"));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(start_err("status code is not three digits"));
        }
        let code: u16 = code.parse().map_err(|_| start_err("invalid status code"))?;
        if code < 100 {
            return Err(start_err("status code below 100"));
        }
        if reason.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f) {
            return Err(start_err("control character in reason phrase"));
        }
        return Ok(StartLine::Response {
            version,
            code,
            reason,
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(start_err(
            "request line is not Method SP Request-URI SP SIP-Version",
        ));
    };
    if !is_token(method) {
        return Err(start_err("method is not a token"));
    }
    if !is_version(version) {
        return Err(start_err("invalid SIP version"));
    }
    check_any_uri(uri).map_err(|_| start_err("invalid Request-URI"))?;
    Ok(StartLine::Request {
        method,
        uri,
        version,
    })
}

/// Parses one complete message: a UDP datagram, or one message cut from a
/// stream by [`frame`]. Leading CRLFs (keep-alives) are skipped.
///
/// The header section must be UTF-8 with CRLF line ends and be closed by an
/// empty line. Content-Length, when present, must be a single decimal value
/// not exceeding the bytes after the empty line; bytes beyond it are ignored
/// (RFC 3261 18.3). Without Content-Length the body is the rest of the buffer.
///
/// Only the structure is checked here, plus the start line and
/// Content-Length; other headers are checked when read through their
/// accessors, and [`Message::validate`] checks what RFC 3261 requires of a
/// request or response as a whole.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    let offset = skip_crlfs(buf);
    let rest = &buf[offset..];
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    // The header section must be UTF-8; the body need not be. Validate as far
    // as the bytes are UTF-8 and look for the end of the headers in that.
    let text = match std::str::from_utf8(rest) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).map_err(|_| ParseError::NotUtf8)?,
    };
    let truncated_by_utf8 = text.len() < rest.len();
    let unterminated = || {
        if truncated_by_utf8 {
            ParseError::NotUtf8
        } else {
            ParseError::UnterminatedHeaders
        }
    };

    let bytes = text.as_bytes();
    // Finds the CRLF ending the line that starts at `from`, and the first
    // colon in it. A CR or LF that is not part of a CRLF is an error.
    let scan_line = |from: usize, line_no: usize| -> Result<(usize, Option<usize>), ParseError> {
        let rest = &bytes[from..];
        let end = memchr::memchr2(b'\r', b'\n', rest).ok_or_else(unterminated)?;
        match rest.get(end..end + 2) {
            Some(b"\r\n") => {}
            None if rest[end] == b'\r' => return Err(unterminated()),
            _ => return Err(syntax(line_no, "bare CR or LF")),
        }
        let colon = rest[..end]
            .iter()
            .position(|&b| b == b':')
            .map(|c| from + c);
        Ok((from + end, colon))
    };

    let (start_end, _) = scan_line(0, 1).map_err(|e| match e {
        ParseError::HeaderSyntax { .. } => start_err("bare CR or LF"),
        other => other,
    })?;
    let start = parse_start_line(&text[..start_end])?;
    let mut pos = start_end + 2;

    let mut headers: Vec<Header<'_>> = Vec::with_capacity(16);
    let mut line_no = 1;
    let mut seen_content_length = false;
    let body_start = loop {
        line_no += 1;
        let (line_end, colon) = scan_line(pos, line_no)?;
        if line_end == pos {
            break line_end + 2;
        }
        let line = &text[pos..line_end];
        if line.starts_with([' ', '\t']) {
            // Continuation of the previous header's value.
            let last = headers
                .last_mut()
                .ok_or(syntax(line_no, "continuation line before any header"))?;
            let value_start = last.value.as_ptr() as usize - text.as_ptr() as usize;
            last.value = trim_lws(&text[value_start..line_end]);
        } else {
            let colon = colon.ok_or(syntax(line_no, "missing ':'"))?;
            let name = text[pos..colon].trim_end_matches([' ', '\t']);
            if !is_token(name) {
                return Err(syntax(line_no, "header name is not a token"));
            }
            let value = trim_lws(&text[colon + 1..line_end]);
            let kind = names::kind(name);
            if kind == names::CONTENT_LENGTH {
                if seen_content_length {
                    return Err(ParseError::DuplicateContentLength);
                }
                seen_content_length = true;
            }
            headers.push(Header { name, value, kind });
        }
        pos = line_end + 2;
    };

    let available = rest.len() - body_start;
    let body_len = match headers.iter().find(|h| h.kind == names::CONTENT_LENGTH) {
        Some(h) => {
            let declared = parse_content_length(h.value)?;
            if declared > available {
                return Err(ParseError::BodyTruncated {
                    declared,
                    available,
                });
            }
            declared
        }
        None => available,
    };
    let body = &rest[body_start..body_start + body_len];
    Ok(Message {
        start,
        headers,
        body,
        head: &text[..body_start],
        offset,
        len: body_start + body_len,
        parsed: Parsed::default(),
    })
}

pub(crate) fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    let v = trim_lws(value);
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidContentLength);
    }
    v.parse().map_err(|_| ParseError::InvalidContentLength)
}

/// Splits a header value into list elements when the header's grammar is a
/// list: on commas outside quotes and `<>`, trimming white space and
/// skipping empty elements.
fn list_items(value: &str, split: bool) -> impl Iterator<Item = &str> {
    split_top_opt(value, split.then_some(b','))
        .map(trim_lws)
        .filter(move |v| !split || !v.is_empty())
}

impl<'a> Message<'a> {
    /// The start line.
    #[must_use]
    pub fn start(&self) -> &StartLine<'a> {
        &self.start
    }

    /// Whether this is a request.
    #[must_use]
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; `None` for a response.
    #[must_use]
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written; `None` for a response.
    #[must_use]
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI parsed as a `sip:`/`sips:` URI (once); `None` for a
    /// response.
    pub fn sip_request_uri(&self) -> Option<Result<SipUri<'a>, ParseError>> {
        *self
            .parsed
            .request_uri
            .get_or_init(|| self.request_uri().map(parse_uri))
    }

    /// The status code; `None` for a request.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The SIP version of the start line.
    #[must_use]
    pub fn version(&self) -> &'a str {
        match self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => version,
        }
    }

    fn matching<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Header<'a>> + 's {
        let kind = names::kind(name);
        self.headers.iter().filter(move |h| {
            if kind == names::UNKNOWN {
                h.kind == names::UNKNOWN && h.name.eq_ignore_ascii_case(name)
            } else {
                h.kind == kind
            }
        })
    }

    fn first_of_kind(&self, kind: Kind) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.kind == kind)
            .map(|h| h.value)
    }

    /// The first value of a header, trimmed. The name is case-insensitive
    /// and compact forms are equivalent to long names (`i` = `Call-ID`).
    /// The whole header line's value is returned, without list splitting.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.matching(name).next().map(|h| h.value)
    }

    /// [`Message::header`] with folded lines joined by a single SP.
    #[must_use]
    pub fn header_unfolded(&self, name: &str) -> Option<Cow<'a, str>> {
        self.header(name).map(unfold)
    }

    /// Every value of a header in order. Values of list headers (Via,
    /// Contact, Route, Record-Route, Allow, Supported, Require, ...) are
    /// split on commas outside quotes and `<>`; other headers — among them
    /// WWW-Authenticate, Authorization and the Proxy- variants — are not.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        let split = names::is_list(names::kind(name));
        self.matching(name)
            .flat_map(move |h| list_items(h.value, split))
    }

    /// Every header line as received, in order: (name as written, value trimmed).
    pub fn header_lines(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// How many times a header (any form) occurs as a header line.
    #[must_use]
    pub fn count(&self, name: &str) -> usize {
        self.matching(name).count()
    }

    /// The Call-ID (`word [ "@" word ]`).
    pub fn call_id(&self) -> Result<&'a str, ParseError> {
        let v = self
            .first_of_kind(names::CALL_ID)
            .ok_or(ParseError::MissingHeader("Call-ID"))?;
        let ok = !v.is_empty()
            && v.bytes().all(|b| {
                is_token_byte(b)
                    || matches!(
                        b,
                        b'(' | b')'
                            | b'<'
                            | b'>'
                            | b':'
                            | b'\\'
                            | b'"'
                            | b'/'
                            | b'['
                            | b']'
                            | b'?'
                            | b'{'
                            | b'}'
                            | b'@'
                    )
            })
            && v.bytes().filter(|&b| b == b'@').count() <= 1
            && !v.starts_with('@')
            && !v.ends_with('@');
        if ok {
            Ok(v)
        } else {
            Err(ParseError::InvalidHeader {
                name: "Call-ID",
                reason: "not word [@ word]",
            })
        }
    }

    /// The `CSeq` number and method. The number must fit in 32 bits.
    pub fn cseq(&self) -> Result<(u32, &'a str), ParseError> {
        let err = |reason| ParseError::InvalidHeader {
            name: "CSeq",
            reason,
        };
        let v = self
            .first_of_kind(names::CSEQ)
            .ok_or(ParseError::MissingHeader("CSeq"))?;
        let split = v
            .bytes()
            .position(is_lws)
            .ok_or(err("expected number and method"))?;
        let (num, method) = (&v[..split], trim_lws(&v[split..]));
        if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("sequence number is not a 32-bit decimal"));
        }
        let num: u32 = num
            .parse()
            .map_err(|_| err("sequence number exceeds 32 bits"))?;
        if !is_token(method) {
            return Err(err("method is not a token"));
        }
        Ok((num, method))
    }

    /// Every Via value in order, comma-joined values split.
    pub fn vias(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(|h| h.kind == names::VIA)
            .flat_map(|h| list_items(h.value, true))
    }

    /// The topmost Via, parsed (once).
    pub fn top_via(&self) -> Result<Via<'a>, ParseError> {
        *self.parsed.top_via.get_or_init(|| {
            let top = self.vias().next().ok_or(ParseError::MissingHeader("Via"))?;
            parse_via(top)
        })
    }

    /// The From header, parsed (once).
    pub fn from(&self) -> Result<NameAddr<'a>, ParseError> {
        *self.parsed.from.get_or_init(|| {
            let v = self
                .first_of_kind(names::FROM)
                .ok_or(ParseError::MissingHeader("From"))?;
            parse_name_addr(v, "From")
        })
    }

    /// The To header, parsed (once).
    pub fn to(&self) -> Result<NameAddr<'a>, ParseError> {
        *self.parsed.to.get_or_init(|| {
            let v = self
                .first_of_kind(names::TO)
                .ok_or(ParseError::MissingHeader("To"))?;
            parse_name_addr(v, "To")
        })
    }

    /// Max-Forwards, `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        let Some(v) = self.first_of_kind(names::MAX_FORWARDS) else {
            return Ok(None);
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidHeader {
                name: "Max-Forwards",
                reason: "not a decimal number",
            });
        }
        v.parse().map(Some).map_err(|_| ParseError::InvalidHeader {
            name: "Max-Forwards",
            reason: "out of range",
        })
    }

    /// Every Contact value parsed (`*` yields a `NameAddr` with `uri == "*"`).
    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr<'a>, ParseError>> + '_ {
        self.headers
            .iter()
            .filter(|h| h.kind == names::CONTACT)
            .flat_map(|h| list_items(h.value, true))
            .map(|v| parse_name_addr(v, "Contact"))
    }

    /// The Date header, checked against RFC 1123 `wkday, DD Mon YYYY HH:MM:SS GMT`.
    pub fn date(&self) -> Result<Option<&'a str>, ParseError> {
        let Some(v) = self.header(names::DATE_NAME) else {
            return Ok(None);
        };
        if crate::date::is_sip_date(v) {
            Ok(Some(v))
        } else {
            Err(ParseError::InvalidHeader {
                name: "Date",
                reason: "not an RFC 1123 date in GMT",
            })
        }
    }

    /// The body: exactly Content-Length bytes, or the rest of the datagram.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Where the message starts in the parsed buffer (after leading CRLFs)
    /// and how many bytes it spans there, body included; for splicing the
    /// original bytes when forwarding.
    #[must_use]
    pub fn span(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }

    /// Checks what RFC 3261 requires of a message as a whole, beyond what
    /// [`parse`] checks: version SIP/2.0; To, From, `Call-ID`, `CSeq` and Via
    /// present, parseable and (except Via) not repeated; Max-Forwards valid;
    /// for requests, `CSeq` method equal to the request method and no URI
    /// headers in a sip/sips Request-URI.
    pub fn validate(&self) -> Result<(), ParseError> {
        if !self.version().eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::UnsupportedVersion);
        }
        for (kind, name) in [
            (names::TO, "To"),
            (names::FROM, "From"),
            (names::CALL_ID, "Call-ID"),
            (names::CSEQ, "CSeq"),
            (names::VIA, "Via"),
        ] {
            if self.first_of_kind(kind).is_none() {
                return Err(ParseError::MissingHeader(name));
            }
        }
        for (kind, name) in [
            (names::TO, "To"),
            (names::FROM, "From"),
            (names::CALL_ID, "Call-ID"),
            (names::CSEQ, "CSeq"),
            (names::MAX_FORWARDS, "Max-Forwards"),
            (names::CONTENT_TYPE, "Content-Type"),
        ] {
            if self.headers.iter().filter(|h| h.kind == kind).count() > 1 {
                return Err(ParseError::DuplicateHeader(name));
            }
        }
        self.call_id()?;
        let (_, cseq_method) = self.cseq()?;
        self.from()?;
        self.to()?;
        self.top_via()?;
        for via in self.vias().skip(1) {
            parse_via(via)?;
        }
        self.max_forwards()?;
        if let StartLine::Request { method, .. } = self.start {
            if method != cseq_method {
                return Err(ParseError::CSeqMethodMismatch);
            }
            if self
                .sip_request_uri()
                .is_some_and(|u| u.is_ok_and(|u| u.headers.is_some()))
            {
                return Err(ParseError::RequestUriHeaders);
            }
        }
        Ok(())
    }
}
