//! The one error type of the crate.

/// What is wrong with a message, a header value, a URI or a credential.
///
/// Variants carry only static text and numbers so the error is cheap to
/// create, copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input holds no message at all (empty, or only CRLF keep-alives).
    #[error("empty message")]
    Empty,
    /// The header section is not closed by an empty line.
    #[error("header section is not terminated by an empty line")]
    UnterminatedHeaders,
    /// The header section exceeds [`crate::MAX_HEADER_SECTION`] bytes.
    #[error("header section exceeds {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The start line or header section is not valid UTF-8.
    #[error("header section is not valid UTF-8")]
    NotUtf8,
    /// The request or status line is malformed.
    #[error("malformed start line: {reason}")]
    StartLine {
        /// What is wrong.
        reason: &'static str,
    },
    /// A header line is malformed (bad field name, missing colon, bare CR or LF).
    #[error("malformed header line {line}: {reason}")]
    HeaderSyntax {
        /// 1-based line number within the message (the start line is line 1).
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A stream message carries no Content-Length, so it cannot be framed.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not a non-negative decimal integer.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length appears more than once.
    #[error("Content-Length appears more than once")]
    DuplicateContentLength,
    /// Content-Length promises more bytes than the message carries.
    #[error("Content-Length {declared} exceeds the {available} bytes after the header section")]
    BodyTruncated {
        /// The declared length.
        declared: usize,
        /// The bytes actually present.
        available: usize,
    },
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that may appear once appears more than once.
    #[error("{0} header appears more than once")]
    DuplicateHeader(&'static str),
    /// A header's value does not follow its grammar.
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// The header's long name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A URI is malformed.
    #[error("invalid URI: {reason}")]
    InvalidUri {
        /// What is wrong.
        reason: &'static str,
    },
    /// A well-formed URI whose scheme is neither `sip` nor `sips`.
    #[error("unsupported URI scheme (only sip and sips are parsed)")]
    UnsupportedScheme,
    /// The protocol version is not SIP/2.0.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// The `CSeq` method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// The Request-URI carries URI headers (`?...`), which RFC 3261 19.1.1 forbids.
    #[error("Request-URI carries URI headers")]
    RequestUriHeaders,
    /// An authentication header does not use the Digest scheme.
    #[error("authentication scheme is not Digest")]
    UnsupportedAuthScheme,
    /// A required Digest parameter is absent.
    #[error("missing Digest parameter {0}")]
    MissingParam(&'static str),
    /// A Digest parameter appears more than once.
    #[error("Digest parameter {0} appears more than once")]
    DuplicateParam(&'static str),
    /// A Digest parameter's value is malformed.
    #[error("invalid Digest parameter {name}: {reason}")]
    InvalidParam {
        /// The parameter name (lower case), or `-` when it cannot be named.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}
