//! Stream framing (TCP, TLS): where one message ends in a byte stream, by
//! its Content-Length (RFC 3261 18.3), before it is parsed.

use crate::ParseError;
use crate::message::{find_blank_line, parse_content_length, skip_crlfs};

/// The largest header section [`frame`] waits for before giving up.
pub const MAX_HEADER_SECTION: usize = 64 * 1024;

/// Stream framing (TCP, TLS): finds where the first message ends.
///
/// `Ok(Some(n))`: the first message occupies `buf[..n]` (leading CRLF
/// keep-alives, header section and Content-Length body). `Ok(None)`: more
/// bytes are needed. `Err`: the stream cannot be framed — no or invalid or
/// repeated Content-Length, or no end of the header section within
/// [`MAX_HEADER_SECTION`] bytes. After an error the connection should be
/// closed.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let offset = skip_crlfs(buf);
    let rest = &buf[offset..];
    let Some(head_end) = find_blank_line(rest) else {
        if rest.len() > MAX_HEADER_SECTION {
            return Err(ParseError::HeadersTooLarge {
                limit: MAX_HEADER_SECTION,
            });
        }
        return Ok(None);
    };
    if head_end + 4 > MAX_HEADER_SECTION {
        return Err(ParseError::HeadersTooLarge {
            limit: MAX_HEADER_SECTION,
        });
    }
    let head = &rest[..head_end];
    let mut content_length = None;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let is_cl = name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l");
        if !is_cl {
            continue;
        }
        if content_length.is_some() {
            return Err(ParseError::DuplicateContentLength);
        }
        // A folded Content-Length is legal, if odd: the digits may sit on a
        // continuation line (but cannot be split across lines).
        let mut value = line[colon + 1..].trim_ascii();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            let next = next.trim_ascii();
            if !next.is_empty() {
                if !value.is_empty() {
                    return Err(ParseError::InvalidContentLength);
                }
                value = next;
            }
            lines.next();
        }
        let value = std::str::from_utf8(value).map_err(|_| ParseError::InvalidContentLength)?;
        content_length = Some(parse_content_length(value)?);
    }
    let cl = content_length.ok_or(ParseError::MissingContentLength)?;
    let total = offset
        .checked_add(head_end + 4)
        .and_then(|n| n.checked_add(cl))
        .ok_or(ParseError::InvalidContentLength)?;
    Ok((buf.len() >= total).then_some(total))
}
