//! How a call ended: one value for the record, the hangup_url, a `<Dial>`'s
//! action URL and the final response of a caller still unanswered.
#![forbid(unsafe_code)]

use sipauth_model::Cause;

/// How a call, a leg or a `<Dial>` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The final response a caller not yet answered gets when its call
    /// ends so (an answered party gets a BYE instead).
    pub code: u16,
    /// CallStatus (records, hangup_url) or DialStatus (action URL).
    pub status: &'static str,
    /// HangupCauseName and HangupCauseCode.
    pub cause: Cause,
}

impl Outcome {
    #[must_use]
    pub const fn new(code: u16, status: &'static str, cause: Cause) -> Self {
        Self {
            code,
            status,
            cause,
        }
    }

    /// Answered, then hung up (by either side or by a time limit).
    pub const HUNG_UP: Self = Self::new(200, "completed", Cause::NormalHangup);
    /// The XML ran out.
    pub const END_OF_XML: Self = Self::new(480, "completed", Cause::EndOfXml);
    /// The caller cancelled before it was answered.
    pub const CANCELLED: Self = Self::new(487, "cancel", Cause::Cancelled);
    /// The answer_url (or a Dial action URL) could not be fetched.
    pub const ANSWER_URL_UNREACHABLE: Self = Self::new(480, "failed", Cause::AnswerUrlUnreachable);
    /// The answer_url (or a Dial action URL) returned XML that is not valid.
    pub const INVALID_XML: Self = Self::new(480, "failed", Cause::InvalidAnswerXml);

    pub const AUTH_FAILED: Self = Self::new(403, "failed", Cause::OutboundAuthFailed);
    pub const AUTH_TIMEOUT: Self = Self::new(408, "timeout", Cause::OutboundAuthTimeout);
    pub const INVALID_DESTINATION: Self = Self::new(404, "failed", Cause::InvalidDestination);
    pub const DNS_LOOKUP_FAILED: Self = Self::new(404, "failed", Cause::DnsLookupFailed);
    pub const NETWORK_ERROR: Self = Self::new(503, "failed", Cause::NetworkError);
    pub const TLS_CERTIFICATE_FAILED: Self = Self::new(502, "failed", Cause::TlsCertificateFailed);
    pub const DIAL_UNAVAILABLE: Self = Self::new(480, "failed", Cause::DialNotAvailable);

    /// The outcome of a final failure response `code` to an INVITE that
    /// carried no credentials, or carried them and was not rejected for them.
    #[must_use]
    pub fn of_status(code: u16) -> Self {
        match code {
            486 | 600 => Self::new(code, "busy", Cause::BusyLine),
            408 | 480 => Self::new(code, "no-answer", Cause::NoAnswer),
            487 => Self::CANCELLED,
            603 => Self::new(code, "failed", Cause::Rejected),
            _ => Self::new(code, "failed", Cause::DestinationFailed),
        }
    }

    /// `<Hangup reason>` of a caller not yet answered: `busy` 486,
    /// `rejected` 603, anything else (or none) 480 with `normal_hangup`.
    #[must_use]
    pub fn of_hangup(reason: Option<&str>) -> Self {
        match reason {
            Some("busy") => Self::of_status(486),
            Some("rejected") => Self::of_status(603),
            _ => Self::new(480, "completed", Cause::NormalHangup),
        }
    }

    /// The reason phrase of [`Outcome::code`]: the RFC's, except where
    /// the callback failed, which the phrase names.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self.cause {
            Cause::AnswerUrlUnreachable => "Answer URL Unreachable",
            Cause::InvalidAnswerXml => "Invalid Answer XML",
            _ => sipauth_sip::build::reason_phrase(self.code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangup_reasons() {
        let busy = Outcome::of_hangup(Some("busy"));
        assert_eq!(
            (busy.code, busy.reason(), busy.status),
            (486, "Busy Here", "busy")
        );
        assert_eq!(busy.cause, Cause::BusyLine);
        let rejected = Outcome::of_hangup(Some("rejected"));
        assert_eq!(
            (rejected.code, rejected.reason(), rejected.status),
            (603, "Decline", "failed")
        );
        assert_eq!(rejected.cause, Cause::Rejected);
        for reason in [None, Some("unknown")] {
            let o = Outcome::of_hangup(reason);
            assert_eq!(
                (o.code, o.reason(), o.status),
                (480, "Temporarily Unavailable", "completed")
            );
            assert_eq!(o.cause, Cause::NormalHangup);
        }
    }

    #[test]
    fn callback_failures_name_themselves() {
        assert_eq!(Outcome::INVALID_XML.reason(), "Invalid Answer XML");
        assert_eq!(
            Outcome::ANSWER_URL_UNREACHABLE.reason(),
            "Answer URL Unreachable"
        );
        assert_eq!(Outcome::END_OF_XML.reason(), "Temporarily Unavailable");
        assert_eq!(Outcome::CANCELLED.reason(), "Request Terminated");
        assert_eq!(Outcome::of_status(487), Outcome::CANCELLED);
    }
}

/// How a party's `<Dial>` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialed {
    /// The call is over (the party hung up or cancelled, or the bridge it
    /// was answered into ended): nothing more of the XML is followed, and
    /// the party has already ended.
    Over(Outcome),
    /// A target answered and hung up later: the XML goes on.
    Connected,
    /// No target answered: the XML goes on, and ends with this outcome
    /// when nothing else happens.
    Unreached(Outcome),
}
