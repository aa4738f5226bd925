//! Counters of the user-space edge, and the Prometheus text rendering of
//! them together with the XDP program's per-CPU counters.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::conn::{Closure, Refusal};

/// Request methods counted by name; the rest are `other`.
const METHODS: [&str; 7] = [
    "INVITE", "ACK", "OPTIONS", "BYE", "CANCEL", "REGISTER", "other",
];

#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; METHODS.len()],
    /// Indexed by status code - 100.
    responses: Vec<AtomicU64>,
    /// Messages that could not be parsed or lacked a mandatory header.
    pub malformed: AtomicU64,
    /// Malformed messages dropped because no response could be formed.
    pub dropped: AtomicU64,
    /// Responses received while the edge has no client transaction.
    pub stray_responses: AtomicU64,
    /// Stream (TCP, TLS) connections closed because they could not be framed.
    pub tcp_framing_errors: AtomicU64,
    /// Requests that matched a transaction (answered again, not judged).
    pub retransmissions: AtomicU64,
    /// INVITEs refused by lockout, ACL or credentials.
    pub denied: AtomicU64,
    /// INVITEs let in (answer_url fetched).
    pub allowed: AtomicU64,
    /// INVITEs admission let in that got 503: no slot was free.
    pub unavailable: AtomicU64,
    /// Inbound calls in progress now (a gauge; see [`crate::call::Slots`]).
    pub inbound_calls: AtomicU64,
    /// Make Calls being dialled or in progress now (a gauge).
    pub outbound_calls: AtomicU64,
    /// Call records dropped because the writer fell too far behind.
    pub records_dropped: AtomicU64,
    /// hangup_urls dropped because their queue was full.
    pub hangups_dropped: AtomicU64,
    /// Replies over UDP to unproven sources sent within the budget.
    pub unproven_replies: AtomicU64,
    /// Replies over UDP to unproven sources not sent: the budget was spent.
    pub unproven_suppressed: AtomicU64,
    /// TCP connections: open, refused and closed.
    pub tcp: Arc<ConnCounters>,
    /// TLS connections, likewise.
    pub tls: Arc<ConnCounters>,
    /// The fleet's connection and traffic.
    pub cluster: Arc<crate::cluster::Counters>,
}

/// Stream connections of one transport: open now, refused and closed by
/// reason.
#[derive(Default)]
pub struct ConnCounters {
    pub open: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    closed: [AtomicU64; Closure::ALL.len()],
}

// === impl ConnCounters ===

impl ConnCounters {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn closed(&self, why: Closure) {
        self.closed[why as usize].fetch_add(1, Relaxed);
    }

    #[must_use]
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }

    #[must_use]
    pub fn closed_count(&self, why: Closure) -> u64 {
        self.closed[why as usize].load(Relaxed)
    }
}

/// Writes the connection counters of each transport, one metric family
/// after the other (a family's HELP and TYPE once, then every label set).
fn render_connections(by_transport: &[(&str, &ConnCounters)], out: &mut String) {
    out.push_str("# HELP sipauth_connections_open Stream connections open now, by transport.\n");
    out.push_str("# TYPE sipauth_connections_open gauge\n");
    for (transport, c) in by_transport {
        let _ = writeln!(
            out,
            "sipauth_connections_open{{transport=\"{transport}\"}} {}",
            c.open.load(Relaxed)
        );
    }
    out.push_str("# HELP sipauth_connections_refused_total Stream connections closed at accept, by transport and reason.\n");
    out.push_str("# TYPE sipauth_connections_refused_total counter\n");
    for (transport, c) in by_transport {
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "sipauth_connections_refused_total{{transport=\"{transport}\",reason=\"{}\"}} {}",
                why.name(),
                c.refused_count(why)
            );
        }
    }
    out.push_str("# HELP sipauth_connections_closed_total Stream connections ended, by transport and reason.\n");
    out.push_str("# TYPE sipauth_connections_closed_total counter\n");
    for (transport, c) in by_transport {
        for why in Closure::ALL {
            let _ = writeln!(
                out,
                "sipauth_connections_closed_total{{transport=\"{transport}\",reason=\"{}\"}} {}",
                why.name(),
                c.closed_count(why)
            );
        }
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        Self {
            responses: (100..700).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    pub fn request(&self, method: &str) {
        let i = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        self.requests[i].fetch_add(1, Relaxed);
    }

    pub fn response(&self, code: u16) {
        if let Some(c) = code
            .checked_sub(100)
            .and_then(|i| self.responses.get(usize::from(i)))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text exposition format, version 0.0.4.
    #[must_use]
    pub fn render(&self, xdp: Option<&[(sipauth_common::stats::Reason, u64)]>) -> String {
        let mut out = String::new();
        out.push_str("# HELP sipauth_sip_requests_total SIP requests received, by method.\n");
        out.push_str("# TYPE sipauth_sip_requests_total counter\n");
        for (m, c) in METHODS.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "sipauth_sip_requests_total{{method=\"{m}\"}} {}",
                c.load(Relaxed)
            );
        }
        out.push_str("# HELP sipauth_sip_responses_total SIP responses sent (every datagram or stream write, retransmissions included), by status code.\n");
        out.push_str("# TYPE sipauth_sip_responses_total counter\n");
        for (code, c) in (100u16..).zip(&self.responses) {
            let n = c.load(Relaxed);
            if n > 0 {
                let _ = writeln!(out, "sipauth_sip_responses_total{{code=\"{code}\"}} {n}");
            }
        }
        for (name, help, v) in [
            (
                "sipauth_sip_malformed_total",
                "SIP messages that failed to parse or lacked a mandatory header.",
                &self.malformed,
            ),
            (
                "sipauth_sip_dropped_total",
                "Malformed SIP messages dropped without a response.",
                &self.dropped,
            ),
            (
                "sipauth_sip_stray_responses_total",
                "SIP responses that matched no client transaction.",
                &self.stray_responses,
            ),
            (
                "sipauth_tcp_framing_errors_total",
                "TCP connections closed because the stream could not be framed.",
                &self.tcp_framing_errors,
            ),
            (
                "sipauth_sip_retransmissions_total",
                "Requests answered from their transaction without a new judgement.",
                &self.retransmissions,
            ),
            (
                "sipauth_invites_denied_total",
                "INVITEs refused by lockout, IP ACL or credentials.",
                &self.denied,
            ),
            (
                "sipauth_invites_allowed_total",
                "INVITEs let in to their application.",
                &self.allowed,
            ),
            (
                "sipauth_invites_unavailable_total",
                "INVITEs admission let in that got 503 Service Unavailable: sip.max_inbound_calls calls were in progress.",
                &self.unavailable,
            ),
            (
                "sipauth_call_records_dropped_total",
                "Call records dropped because the writer fell too far behind.",
                &self.records_dropped,
            ),
            (
                "sipauth_hangup_callbacks_dropped_total",
                "hangup_url callbacks dropped because their queue was full (their servers answered slower than calls ended).",
                &self.hangups_dropped,
            ),
            (
                "sipauth_sip_unproven_replies_total",
                "Responses sent over UDP to sources that have not passed admission, within sip.unproven_replies_per_sec.",
                &self.unproven_replies,
            ),
            (
                "sipauth_sip_unproven_suppressed_total",
                "Responses to sources that have not passed admission left unsent: the budget was spent.",
                &self.unproven_suppressed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipauth_inbound_calls Inbound calls in progress now (let in, not yet ended).\n\
             # TYPE sipauth_inbound_calls gauge\nsipauth_inbound_calls {}",
            self.inbound_calls.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sipauth_outbound_calls Make Calls being dialled or in progress now.\n\
             # TYPE sipauth_outbound_calls gauge\nsipauth_outbound_calls {}",
            self.outbound_calls.load(Relaxed)
        );
        render_connections(&[("tcp", &self.tcp), ("tls", &self.tls)], &mut out);
        self.cluster.render(&mut out);
        if let Some(xdp) = xdp {
            out.push_str("# HELP sipauth_xdp_packets_total Packets judged by the XDP program, by verdict and reason.\n");
            out.push_str("# TYPE sipauth_xdp_packets_total counter\n");
            for (reason, n) in xdp {
                let _ = writeln!(
                    out,
                    "sipauth_xdp_packets_total{{verdict=\"{}\",reason=\"{}\"}} {n}",
                    reason.verdict(),
                    reason.name()
                );
            }
        }
        out
    }
}

/// Appends one counter that lives outside [`Metrics`] (the lockout
/// table's), in the same format.
pub fn render_counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipauth_common::stats::Reason;

    #[test]
    fn renders_counters() {
        let m = Metrics::new();
        m.request("INVITE");
        m.request("FOO");
        m.response(403);
        m.response(99);
        m.response(700);
        m.tcp.refused(Refusal::PerSource);
        m.tcp.closed(Closure::Idle);
        m.tcp.open.fetch_add(2, Relaxed);
        let text = m.render(Some(&[(Reason::LockedDrop, 5)]));
        assert!(text.contains("sipauth_sip_requests_total{method=\"INVITE\"} 1\n"));
        assert!(text.contains("sipauth_sip_requests_total{method=\"other\"} 1\n"));
        assert!(text.contains("sipauth_sip_responses_total{code=\"403\"} 1\n"));
        assert!(text.contains("sipauth_connections_open{transport=\"tcp\"} 2\n"));
        assert!(text.contains(
            "sipauth_connections_refused_total{transport=\"tcp\",reason=\"per_source\"} 1\n"
        ));
        assert!(
            text.contains(
                "sipauth_connections_closed_total{transport=\"tcp\",reason=\"idle\"} 1\n"
            )
        );
        assert!(
            text.contains("sipauth_xdp_packets_total{verdict=\"drop\",reason=\"locked_out\"} 5\n")
        );
    }
}
