//! HTTP/1.1 on one connection (RFC 9112), in the task that asks: the
//! request is written whole, in one write, and the response read back in
//! the same task, with no connection task and no channel between them.
//!
//! The response head is parsed by `httparse`; the body is framed as RFC
//! 9112 6.3 says (no body for 1xx, 204 and 304; chunked when the last
//! transfer coding is chunked; else Content-Length; else until the server
//! closes). A connection may carry another request only when its response
//! ended where its framing said, nothing followed it, and neither side
//! asked to close (HTTP/1.1 without `Connection: close`).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::BodyError;

/// The most a response head may take; a server sending more is broken.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines of a response head at most.
const MAX_HEADERS: usize = 64;
/// Bytes asked of the connection per read.
const READ_CHUNK: usize = 16 * 1024;

/// A request as it goes on the wire: `target` in origin form (path and
/// query), `host` the Host header, `headers` with values free of line
/// breaks. Content-Length is added for `body`.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub host: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The request's bytes, head and body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut length = itoa::Buffer::new();
        // GET carries no body and says nothing of one (RFC 9110 8.6).
        let length =
            (!self.body.is_empty() || self.method != "GET").then(|| length.format(self.body.len()));
        let head = self.method.len()
            + self.target.len()
            + self.host.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
            + length.map_or(0, |l| l.len() + "Content-Length: \r\n".len())
            // The request line's and Host's fixed parts, the blank line.
            + " HTTP/1.1\r\nHost: \r\n\r\n".len()
            + 1;
        let mut out = Vec::with_capacity(head + self.body.len());
        for part in [
            self.method,
            " ",
            self.target,
            " HTTP/1.1\r\nHost: ",
            self.host,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.headers {
            for part in [*name, ": ", *value, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        if let Some(length) = length {
            for part in ["Content-Length: ", length, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
        debug_assert_eq!(out.len(), head + self.body.len(), "the head's size");
        out
    }
}

/// A response read to its end (or as far as it could be).
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    /// The body when it was asked for: whole, or why it is not.
    pub body: Option<Result<Vec<u8>, BodyError>>,
    /// Whether the connection may carry another request.
    pub reusable: bool,
}

/// How the body of a response ends (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// What the head of a final response says.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// Bytes of the head in the buffer.
    len: usize,
}

/// Reads the response to a request just written on `io`: the head (1xx
/// interim responses passed over), then the body, kept when `keep_body`
/// and otherwise read and dropped so the connection can be used again.
/// A body over `limit` bytes is [`BodyError::TooLarge`] and not read. An
/// error is returned only when no complete response head arrived.
pub(crate) async fn read_response<R>(
    io: &mut R,
    keep_body: bool,
    limit: usize,
) -> io::Result<Response>
where
    R: AsyncRead + Unpin,
{
    let mut conn = Reader {
        io,
        buf: Vec::with_capacity(READ_CHUNK),
        at: 0,
    };
    let head = conn.head().await?;
    conn.at = head.len;
    let body = conn.body(head.framing, limit).await;
    // Anything after the response was not asked for: the connection is no
    // longer in step with the server.
    let ended_clean = body.is_ok() && conn.at == conn.buf.len();
    let reusable = ended_clean && head.keep_alive && head.framing != Framing::Close;
    Ok(Response {
        status: head.status,
        body: keep_body.then_some(body),
        reusable,
    })
}

struct Reader<'a, R> {
    io: &'a mut R,
    buf: Vec<u8>,
    /// Bytes of `buf` consumed.
    at: usize,
}

impl<R: AsyncRead + Unpin> Reader<'_, R> {
    /// Reads more; `false` at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        // Into the spare capacity: nothing zeroed first.
        self.buf.reserve(READ_CHUNK);
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// The head of the final response, parsed from the start of the buffer.
    async fn head(&mut self) -> io::Result<Head> {
        loop {
            match parse_head(&self.buf[self.at..])? {
                Some(Parsed::Interim(len)) => {
                    self.at += len;
                    continue;
                }
                Some(Parsed::Final(mut head)) => {
                    head.len += self.at;
                    return Ok(head);
                }
                None => {}
            }
            if self.buf.len() - self.at > MAX_HEAD_BYTES {
                return Err(invalid("response head too large"));
            }
            if !self.fill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
        }
    }

    async fn body(&mut self, framing: Framing, limit: usize) -> Result<Vec<u8>, BodyError> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= limit)
                    .ok_or(BodyError::TooLarge)?;
                while self.buf.len() - self.at < n {
                    self.more().await?;
                }
                let body = self.buf[self.at..self.at + n].to_vec();
                self.at += n;
                Ok(body)
            }
            Framing::Close => {
                while self
                    .fill()
                    .await
                    .map_err(|e| BodyError::Read(e.to_string()))?
                {
                    if self.buf.len() - self.at > limit {
                        return Err(BodyError::TooLarge);
                    }
                }
                let body = self.buf[self.at..].to_vec();
                self.at = self.buf.len();
                Ok(body)
            }
            Framing::Chunked => self.chunked(limit).await,
        }
    }

    /// A chunked body (RFC 9112 7.1): chunks, the last chunk, trailer lines
    /// (dropped) and the empty line.
    async fn chunked(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let mut body = Vec::new();
        loop {
            let (len, size) = loop {
                match httparse::parse_chunk_size(&self.buf[self.at..]) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) => self.more().await?,
                    Err(_) => return Err(BodyError::Read("bad chunk size".into())),
                }
            };
            self.at += len;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= limit.saturating_sub(body.len()))
                .ok_or(BodyError::TooLarge)?;
            while self.buf.len() - self.at < size + 2 {
                self.more().await?;
            }
            body.extend_from_slice(&self.buf[self.at..self.at + size]);
            if &self.buf[self.at + size..self.at + size + 2] != b"\r\n" {
                return Err(BodyError::Read("chunk not ended by CRLF".into()));
            }
            self.at += size + 2;
        }
        // Trailer fields, each a line, then the empty line.
        loop {
            let Some(end) = self.buf[self.at..].windows(2).position(|w| w == b"\r\n") else {
                if self.buf.len() - self.at > MAX_HEAD_BYTES {
                    return Err(BodyError::Read("trailer section too large".into()));
                }
                self.more().await?;
                continue;
            };
            self.at += end + 2;
            if end == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads more of a body that has not ended.
    async fn more(&mut self) -> Result<(), BodyError> {
        match self.fill().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BodyError::Read("connection closed inside the body".into())),
            Err(e) => Err(BodyError::Read(e.to_string())),
        }
    }
}

enum Parsed {
    /// A 1xx response other than 101, of this many bytes.
    Interim(usize),
    Final(Head),
}

/// The response head at the start of `bytes`, `None` while incomplete.
fn parse_head(bytes: &[u8]) -> io::Result<Option<Parsed>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("response head: {e}"))),
    };
    let status = res.code.unwrap_or_default();
    match status {
        101 => return Err(invalid("101 Switching Protocols was not asked for")),
        100..=199 => return Ok(Some(Parsed::Interim(len))),
        _ => {}
    }
    let mut keep_alive = res.version == Some(1);
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in res.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default();
        if h.name.eq_ignore_ascii_case("connection") {
            if tokens(value).any(|t| t.eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding counts (RFC 9112 6.3, item 4).
            if let Some(last) = tokens(value).last() {
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in value.split(',').map(str::trim) {
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
    }
    let framing = match (status, chunked, length) {
        (204 | 304, ..) => Framing::None,
        (_, Some(true), _) => Framing::Chunked,
        (_, None, Some(n)) => Framing::Length(n),
        // Another last coding, or no framing at all: the body runs to the
        // server's close.
        (_, Some(false), _) | (_, None, None) => Framing::Close,
    };
    Ok(Some(Parsed::Final(Head {
        status,
        framing,
        keep_alive,
        len,
    })))
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `wire` as the response to one request, handed over in pieces
    /// of `step` bytes (a server writing slowly).
    async fn read(wire: &[u8], step: usize, limit: usize) -> io::Result<Response> {
        let mut server = slow(wire, step);
        read_response(&mut server, true, limit).await
    }

    /// An in-memory stream that yields `wire` `step` bytes at a time, then
    /// its end.
    fn slow(wire: &[u8], step: usize) -> impl AsyncRead + Unpin {
        let (mut tx, rx) = tokio::io::duplex(wire.len().max(1));
        let wire = wire.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for piece in wire.chunks(step.max(1)) {
                tx.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        rx
    }

    fn body(r: &Response) -> &[u8] {
        r.body.as_ref().unwrap().as_ref().unwrap()
    }

    #[test]
    fn a_request_is_one_head_and_its_body() {
        let req = Request {
            method: "POST",
            target: "/answer?x=1",
            host: "127.0.0.1:8090",
            headers: &[("User-Agent", "sipauth")],
            body: b"a=1",
        };
        assert_eq!(
            req.encode(),
            b"POST /answer?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nUser-Agent: sipauth\r\n\
              Content-Length: 3\r\n\r\na=1"
        );
        let get = Request {
            method: "GET",
            body: b"",
            ..req
        };
        assert!(
            !String::from_utf8(get.encode())
                .unwrap()
                .contains("Content-Length")
        );
    }

    #[tokio::test]
    async fn content_length_bodies_keep_the_connection() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for step in [1, 7, wire.len()] {
            let r = read(wire, step, 1024).await.unwrap();
            assert_eq!((r.status, body(&r), r.reusable), (200, &b"hello"[..], true));
        }
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                     5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in [1, 5, wire.len()] {
            let r = read(wire, step, 1024).await.unwrap();
            assert_eq!((body(&r), r.reusable), (&b"hello!"[..], true));
        }
    }

    #[tokio::test]
    async fn interim_responses_are_passed_over() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                     HTTP/1.1 204 No Content\r\n\r\n";
        let r = read(wire, 3, 1024).await.unwrap();
        assert_eq!((r.status, body(&r), r.reusable), (204, &b""[..], true));
    }

    #[tokio::test]
    async fn a_body_to_the_close_and_connection_close_end_the_connection() {
        let r = read(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 4, 1024)
            .await
            .unwrap();
        assert_eq!((body(&r), r.reusable), (&b"until the end"[..], false));
        let r = read(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            4,
            1024,
        )
        .await
        .unwrap();
        assert_eq!((body(&r), r.reusable), (&b"ok"[..], false));
        let r = read(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 4, 1024)
            .await
            .unwrap();
        assert!(!r.reusable, "HTTP/1.0 closes unless it says otherwise");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large_and_end_the_connection() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nhello world",
        ] {
            let r = read(wire, 4, 10).await.unwrap();
            assert!(matches!(r.body, Some(Err(BodyError::TooLarge))), "{r:?}");
            assert!(!r.reusable);
        }
    }

    #[tokio::test]
    async fn broken_responses() {
        // No head at all: the request got no response.
        assert!(read(b"", 1, 10).await.is_err());
        assert!(
            read(b"HTTP/1.1 200 OK\r\nContent-Len", 4, 10)
                .await
                .is_err()
        );
        assert!(read(b"garbage\r\n\r\n", 4, 10).await.is_err());
        assert!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", 4, 10)
                .await
                .is_err()
        );
        assert!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", 4, 10)
                .await
                .is_err()
        );
        // A head, then a body cut short or badly chunked: the status stands.
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        ] {
            let r = read(wire, 4, 10).await.unwrap();
            assert_eq!(r.status, 200);
            assert!(matches!(r.body, Some(Err(BodyError::Read(_)))), "{r:?}");
            assert!(!r.reusable);
        }
    }

    /// Responses cut, with bytes changed, inserted and dropped, in pieces
    /// of every size: each read ends (the stream's end comes) and none
    /// panics, whatever a server sends.
    #[tokio::test]
    async fn damaged_responses_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No Content\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\n\r\nto the end",
        ];
        // xorshift64*: the same cases on every run. `pick(n)` is in 0..n.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut pick = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64;
            usize::try_from(r).expect("below n")
        };
        let special = b"\r\n:;0123456789abcdefF ,";
        for case in 0..3_000 {
            let mut wire = seeds[case % seeds.len()].to_vec();
            for _ in 0..=pick(4) {
                let at = pick(wire.len() + 1);
                let byte = special[pick(special.len())];
                match pick(4) {
                    0 if at < wire.len() => wire[at] = byte,
                    1 => wire.insert(at, byte),
                    2 if at < wire.len() => {
                        wire.remove(at);
                    }
                    _ => wire.truncate(at),
                }
            }
            let step = 1 + pick(8);
            // Any outcome but a panic or a hang; a connection is kept
            // only after a whole body.
            if let Ok(r) = read(&wire, step, 16).await {
                assert!(
                    !r.reusable || matches!(r.body, Some(Ok(_))),
                    "{wire:?}: {r:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn bytes_after_the_response_end_the_connection() {
        let r = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1",
            64,
            10,
        )
        .await
        .unwrap();
        assert_eq!(body(&r), b"ok");
        assert!(!r.reusable);
    }
}
