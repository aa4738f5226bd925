//! How a call ended: one name and one code per cause, as call records and
//! callbacks carry them (HangupCauseName, HangupCauseCode).

/// How a call ended, as call records and callbacks name it
/// (HangupCauseName, HangupCauseCode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Answered, then hung up.
    NormalHangup,
    /// 486 or 600.
    BusyLine,
    /// 603, or `<Hangup reason="rejected">`.
    Rejected,
    /// The XML ran out.
    EndOfXml,
    AnswerUrlUnreachable,
    InvalidAnswerXml,
    /// `<Number>` without `sip.number_gateway`.
    DialNotAvailable,
    /// Outbound leg: the far end did not answer (408, 480, or rang out).
    NoAnswer,
    /// Outbound leg: no response at all before Timer B (no credentials sent).
    RequestTimeout,
    /// Outbound leg: a final failure other than busy, decline or auth.
    DestinationFailed,
    /// Outbound leg: the target is not a dialable SIP URI.
    InvalidDestination,
    /// Outbound leg: the target's host name yielded no address (RFC 3263
    /// lookups failed, found nothing, or took too long).
    DnsLookupFailed,
    /// Outbound leg: the socket or TCP connection failed.
    NetworkError,
    /// Outbound leg over TLS: the server's certificate was not valid for
    /// the target's host, or not signed by a trusted root.
    TlsCertificateFailed,
    /// Outbound leg: cancelled before it was answered.
    Cancelled,
    /// Inbound caller failed the IP ACL or credential check.
    InboundAuthFailed,
    /// Non-auth application, caller not a registered endpoint.
    NotRegistered,
    /// Inbound caller let in by admission while the edge carried
    /// `sip.max_inbound_calls` calls or was stopping: answered 503 with
    /// `Retry-After`.
    EdgeUnavailable,
    /// Outbound leg: the far end rejected our credentials (a new challenge
    /// without stale, a 403 after credentials, or a challenge we cannot
    /// answer).
    OutboundAuthFailed,
    /// Outbound leg: no final answer to the authenticated INVITE in time.
    OutboundAuthTimeout,
}

impl Cause {
    /// HangupCauseName.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NormalHangup => "normal_hangup",
            Self::BusyLine => "busy_line",
            Self::Rejected => "rejected",
            Self::EndOfXml => "end_of_xml_instructions",
            Self::AnswerUrlUnreachable => "answer_url_unreachable",
            Self::InvalidAnswerXml => "invalid_answer_xml",
            Self::DialNotAvailable => "dial_not_available",
            Self::NoAnswer => "no_answer",
            Self::RequestTimeout => "request_timeout",
            Self::DestinationFailed => "destination_failed",
            Self::InvalidDestination => "invalid_destination",
            Self::DnsLookupFailed => "dns_lookup_failed",
            Self::NetworkError => "network_error",
            Self::TlsCertificateFailed => "tls_certificate_failed",
            Self::Cancelled => "cancelled",
            Self::InboundAuthFailed | Self::OutboundAuthFailed => "sip_auth_failed",
            Self::NotRegistered => "endpoint_not_registered",
            Self::EdgeUnavailable => "edge_unavailable",
            Self::OutboundAuthTimeout => "sip_auth_timeout",
        }
    }

    /// HangupCauseCode.
    pub const fn code(self) -> i64 {
        match self {
            Self::NormalHangup => 4000,
            Self::BusyLine => 4010,
            Self::Rejected => 4020,
            Self::EndOfXml => 4030,
            Self::AnswerUrlUnreachable => 4060,
            Self::InvalidAnswerXml => 4070,
            Self::DialNotAvailable => 4080,
            Self::NoAnswer => 4090,
            Self::RequestTimeout => 4100,
            Self::DestinationFailed => 4110,
            Self::InvalidDestination => 4120,
            Self::DnsLookupFailed => 4150,
            Self::NetworkError => 4130,
            Self::TlsCertificateFailed => 4160,
            Self::Cancelled => 4140,
            Self::InboundAuthFailed => 4210,
            Self::NotRegistered => 4220,
            Self::EdgeUnavailable => 4230,
            Self::OutboundAuthFailed => 4240,
            Self::OutboundAuthTimeout => 4250,
        }
    }
}
