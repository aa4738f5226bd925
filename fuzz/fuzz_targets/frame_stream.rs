//! TCP stream framing (RFC 3261 18.3) as the edge's TCP readers use it.
//!
//! The input is a byte stream cut into chunks at points the fuzzer chooses.
//! Fed chunk by chunk into a buffer that is framed after every chunk (and
//! drained of each framed message), it must give the same messages, the same
//! error and the same left-over bytes as the whole stream framed at once.
//! Every framed length is positive (so the read loop advances) and within
//! the buffer; a framed message frames alone to itself, one byte less is
//! incomplete, and when it parses, the parser ends it where framing did.
//!
//! Input layout: `[h][k split offsets, u16 LE][stream]` with `k = h & 0x0f`;
//! with `h & 0x80` (and a stream of at most 1 KiB) the stream arrives one
//! byte at a time instead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipauth_sip::{ParseError, frame, parse};

/// What reading a stream gave: the messages framed, and how it stopped
/// (with the bytes left waiting for more, or with a framing error).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    end: Result<Vec<u8>, ParseError>,
}

/// Frames every complete message at the front of `buf`, draining them.
fn drain(buf: &mut Vec<u8>, messages: &mut Vec<Vec<u8>>) -> Result<(), ParseError> {
    loop {
        match frame(buf)? {
            Some(n) => {
                assert!(n > 0, "framed an empty message: the read loop would spin");
                assert!(n <= buf.len(), "framed {n} bytes of {}", buf.len());
                check_message(&buf[..n]);
                messages.push(buf[..n].to_vec());
                buf.drain(..n);
            }
            None => return Ok(()),
        }
    }
}

fn read(chunks: &[&[u8]]) -> Outcome {
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if let Err(e) = drain(&mut buf, &mut messages) {
            return Outcome {
                messages,
                end: Err(e),
            };
        }
    }
    Outcome {
        messages,
        end: Ok(buf),
    }
}

/// What holds for one framed message on its own.
fn check_message(msg: &[u8]) {
    let n = msg.len();
    assert_eq!(frame(msg), Ok(Some(n)), "a framed message frames to itself");
    assert_eq!(
        frame(&msg[..n - 1]),
        Ok(None),
        "a framed message less its last byte is incomplete"
    );
    if let Ok(parsed) = parse(msg) {
        assert_eq!(
            parsed.span().end,
            n,
            "parse and frame disagree on where the message ends"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&h, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(h & 0x0f);
    if rest.len() < 2 * k {
        return;
    }
    let (offsets, stream) = rest.split_at(2 * k);

    let whole = read(&[stream]);

    let chunks: Vec<&[u8]> = if h & 0x80 != 0 && stream.len() <= 1024 {
        stream.chunks(1).collect()
    } else {
        let mut cuts: Vec<usize> = offsets
            .chunks_exact(2)
            .map(|o| usize::from(u16::from_le_bytes([o[0], o[1]])) % (stream.len() + 1))
            .collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
    };
    let chunked = read(&chunks);
    assert_eq!(
        chunked, whole,
        "framing in chunks differs from framing whole"
    );
});
