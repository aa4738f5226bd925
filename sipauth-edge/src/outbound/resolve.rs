//! Where an outbound SIP URI's requests go (RFC 3263 4).
//!
//! A URI is parsed once into a [`Dest`] (its host may be a name). At dial
//! time [`Resolver::targets`] turns it into the ordered [`Target`]s to try:
//!
//! - an IP literal: itself (port 5060, or 5061 for TLS, unless written);
//! - a name with a port: its A and AAAA records, on that port;
//! - a name with `;transport=` but no port: the SRV records of
//!   `_sip._udp.<name>`, `_sip._tcp.<name>` or (TLS) `_sips._tcp.<name>`
//!   (RFC 2782 order: priority, then weight at random), else the name's
//!   addresses on 5060 (5061 for TLS);
//! - a name alone: its NAPTR records for `SIP+D2U`, `SIP+D2T` and
//!   `SIPS+D2T` (order, then preference; a `sips:` URI takes only
//!   `SIPS+D2T`) and the SRV records they point at; without NAPTR, the SRV
//!   records of `_sip._udp` then `_sip._tcp` (a `sips:` URI:
//!   `_sips._tcp`); without SRV, the name's addresses on 5060 over UDP
//!   (5061 over TLS for `sips:`).
//!
//! `sips:` and `;transport=tls` targets are reached over TLS; the server's
//! certificate is checked against the URI's host, not against the SRV
//! target (RFC 5922 4.1, 7.2).
//!
//! A leg tries the targets in turn, moving on when one cannot be reached,
//! never answers, or answers 503 (RFC 3263 4.3). Lookups go to the servers
//! of `/etc/resolv.conf` or `[dns] servers`, are cached for their TTLs by
//! the resolver, and are bounded in time: a name that yields no address in
//! time ends the call as `dns_lookup_failed`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use rand::Rng as _;

use super::{Target, TargetError, Transport};
use crate::outcome::Outcome;

/// A SIP URI to dial, parsed; its host may be a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// The Request-URI, as given.
    pub uri: String,
    /// The host, without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// From `;transport=`, or TLS for a `sips:` URI.
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS on every hop, so only TLS targets.
    pub secure: bool,
}

impl Dest {
    /// Parses `uri`: a `sip:` or `sips:` URI without headers, over UDP,
    /// TCP or TLS.
    pub fn parse(uri: &str) -> Result<Self, TargetError> {
        let u = sipauth_sip::parse_uri(uri.trim()).map_err(|_| TargetError::NotSipUri)?;
        if u.headers.is_some() {
            return Err(TargetError::Headers);
        }
        let secure = u.is_sips();
        let transport = match u.param("transport").flatten() {
            None if secure => Some(Transport::Tls),
            None => None,
            Some(t) if t.eq_ignore_ascii_case("tls") => Some(Transport::Tls),
            // RFC 5630 3.1.3: `sips:...;transport=tcp` is TLS over TCP.
            Some(t) if t.eq_ignore_ascii_case("tcp") && secure => Some(Transport::Tls),
            Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
            Some(t) if t.eq_ignore_ascii_case("udp") && !secure => Some(Transport::Udp),
            Some(_) if secure => {
                return Err(TargetError::Transport("other than tcp/tls for sips:"));
            }
            Some(_) => return Err(TargetError::Transport("other than udp/tcp/tls")),
        };
        Ok(Self {
            uri: uri.trim().to_owned(),
            host: u.host_unbracketed().to_owned(),
            port: u.port,
            transport,
            secure,
        })
    }

    /// The port of a name or literal without one written (RFC 3263 4.2).
    fn default_port(transport: Option<Transport>) -> u16 {
        if transport == Some(Transport::Tls) {
            5061
        } else {
            5060
        }
    }

    /// The one target of an IP literal host; None for a name.
    #[must_use]
    pub fn literal(&self) -> Option<Target> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(self.target(
            ip,
            self.port.unwrap_or(Self::default_port(self.transport)),
            self.transport,
        ))
    }

    fn target(&self, ip: IpAddr, port: u16, transport: Option<Transport>) -> Target {
        Target {
            uri: self.uri.clone(),
            addr: SocketAddr::new(ip, port),
            transport: transport.unwrap_or(Transport::Udp),
            host: self.host.clone(),
        }
    }
}

/// The DNS side of outbound legs.
#[derive(Clone)]
pub struct Resolver {
    dns: Option<Arc<TokioResolver>>,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("dns", &self.dns.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One SRV record, as ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

/// No DNS: only IP literals can be dialled.
impl Default for Resolver {
    fn default() -> Self {
        Self::none()
    }
}

impl Resolver {
    /// No DNS: only IP literals can be dialled.
    #[must_use]
    pub fn none() -> Self {
        Self {
            dns: None,
            timeout: Duration::ZERO,
        }
    }

    /// The servers of `/etc/resolv.conf`, or `servers` when given; each
    /// resolution bounded by `timeout`.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("/etc/resolv.conf: {e}"))?
        } else {
            let config = ResolverConfig::from_parts(
                None,
                Vec::new(),
                servers
                    .iter()
                    .map(|s| {
                        let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                        for c in &mut ns.connections {
                            c.port = s.port();
                        }
                        ns
                    })
                    .collect(),
            );
            TokioResolver::builder_with_config(config, provider)
        };
        builder.options_mut().timeout = timeout;
        let dns = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            dns: Some(Arc::new(dns)),
            timeout,
        })
    }

    /// The targets of `dest`, in the order to try them.
    pub async fn targets(&self, dest: &Dest) -> Result<Vec<Target>, Outcome> {
        if let Some(t) = dest.literal() {
            return Ok(vec![t]);
        }
        let Some(dns) = &self.dns else {
            tracing::info!(host = %dest.host, "outbound target names a host, and no resolver is set up");
            return Err(Outcome::DNS_LOOKUP_FAILED);
        };
        // A lookup gets the resolver's timeout per query; the whole walk
        // (NAPTR, SRV, addresses) gets a few of them at most.
        let walk = tokio::time::timeout(self.timeout * 4, resolve(dns, dest)).await;
        match walk {
            Ok(targets) if !targets.is_empty() => Ok(targets),
            Ok(_) => {
                tracing::info!(host = %dest.host, "outbound target: no address found");
                Err(Outcome::DNS_LOOKUP_FAILED)
            }
            Err(_) => {
                tracing::info!(host = %dest.host, "outbound target: DNS lookup timed out");
                Err(Outcome::DNS_LOOKUP_FAILED)
            }
        }
    }
}

/// RFC 3263 4.1 and 4.2 for a name.
async fn resolve(dns: &TokioResolver, dest: &Dest) -> Vec<Target> {
    let host = fqdn(&dest.host);
    if let Some(port) = dest.port {
        return addresses(dns, &host, port, dest.transport, dest).await;
    }
    if let Some(transport) = dest.transport {
        let srv = srv_records(dns, &srv_name(&host, transport)).await;
        if !srv.is_empty() {
            return srv_targets(dns, srv, transport, dest).await;
        }
        let port = Dest::default_port(Some(transport));
        return addresses(dns, &host, port, Some(transport), dest).await;
    }
    for (service, transport) in naptr(dns, &host, dest.secure).await {
        let srv = srv_records(dns, &service).await;
        let targets = srv_targets(dns, srv, transport, dest).await;
        if !targets.is_empty() {
            return targets;
        }
    }
    let transports: &[Transport] = if dest.secure {
        &[Transport::Tls]
    } else {
        &[Transport::Udp, Transport::Tcp]
    };
    for &transport in transports {
        let srv = srv_records(dns, &srv_name(&host, transport)).await;
        if !srv.is_empty() {
            return srv_targets(dns, srv, transport, dest).await;
        }
    }
    let port = Dest::default_port(dest.transport);
    addresses(dns, &host, port, dest.transport, dest).await
}

/// `name.`: asked as written, not through the search list.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn srv_name(host: &str, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        Transport::Tls => format!("_sips._tcp.{host}"),
    }
}

/// The NAPTR records of `host` that lead to SIP over UDP, TCP or TLS (only
/// TLS when `secure`), as (SRV name, transport), in order then preference
/// (RFC 3263 4.1). Others (SCTP, WebSocket, anything with a regexp) are
/// passed over.
async fn naptr(dns: &TokioResolver, host: &str, secure: bool) -> Vec<(String, Transport)> {
    let Ok(lookup) = dns.lookup(host, RecordType::NAPTR).await else {
        return Vec::new();
    };
    let mut rules: Vec<(u16, u16, String, Transport)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::NAPTR(n) => {
                let transport = match n.services.to_ascii_uppercase().as_slice() {
                    b"SIP+D2U" => Transport::Udp,
                    b"SIP+D2T" => Transport::Tcp,
                    b"SIPS+D2T" => Transport::Tls,
                    _ => return None,
                };
                if secure && transport != Transport::Tls {
                    return None;
                }
                if !n.flags.eq_ignore_ascii_case(b"s") || !n.regexp.is_empty() {
                    return None;
                }
                Some((n.order, n.preference, n.replacement.to_ascii(), transport))
            }
            _ => None,
        })
        .collect();
    rules.sort_by_key(|&(order, pref, _, _)| (order, pref));
    rules.into_iter().map(|(_, _, name, t)| (name, t)).collect()
}

async fn srv_records(dns: &TokioResolver, name: &str) -> Vec<Srv> {
    let Ok(lookup) = dns.lookup(name, RecordType::SRV).await else {
        return Vec::new();
    };
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_ascii(),
            }),
            _ => None,
        })
        // RFC 2782: a target of "." means the service is not offered.
        .filter(|s| s.target != ".")
        .collect()
}

/// RFC 2782 order: by priority; within one, a weighted random draw, one
/// record at a time, so heavier records tend to come first.
fn srv_order(mut records: Vec<Srv>, mut draw: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|s| s.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let priority = records[i].priority;
        let end = records[i..]
            .iter()
            .position(|s| s.priority != priority)
            .map_or(records.len(), |n| i + n);
        // Zero weights first, as the RFC places them.
        let mut group: Vec<Srv> = records[i..end].to_vec();
        group.sort_by_key(|s| s.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|s| u32::from(s.weight)).sum();
            let pick = draw(total);
            let mut running = 0;
            let at = group
                .iter()
                .position(|s| {
                    running += u32::from(s.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(at));
        }
        i = end;
    }
    out
}

async fn srv_targets(
    dns: &TokioResolver,
    records: Vec<Srv>,
    transport: Transport,
    dest: &Dest,
) -> Vec<Target> {
    let ordered = {
        let mut rng = rand::rng();
        srv_order(records, |total| rng.random_range(0..=total))
    };
    let mut out = Vec::new();
    for s in ordered {
        out.extend(addresses(dns, &s.target, s.port, Some(transport), dest).await);
    }
    out
}

/// The A and AAAA records of `host` (IPv6 first when both, as the
/// resolver orders them), each a target.
async fn addresses(
    dns: &TokioResolver,
    host: &str,
    port: u16,
    transport: Option<Transport>,
    dest: &Dest,
) -> Vec<Target> {
    if let Ok(ip) = host.trim_end_matches('.').parse::<IpAddr>() {
        return vec![dest.target(ip, port, transport)];
    }
    match dns.lookup_ip(host).await {
        Ok(ips) => ips
            .iter()
            .map(|ip| dest.target(ip, port, transport))
            .collect(),
        Err(e) => {
            tracing::debug!(%host, error = %e, "no address");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.to_owned(),
        }
    }

    #[test]
    fn uris_parse_with_names_and_without() {
        let d = Dest::parse("sip:bob@trunk.example.test;transport=TCP").unwrap();
        assert_eq!(d.host, "trunk.example.test");
        assert_eq!((d.port, d.transport), (None, Some(Transport::Tcp)));
        assert_eq!(d.literal(), None);
        let t = Dest::parse("sip:bob@10.0.0.2").unwrap().literal().unwrap();
        assert_eq!(t.addr, "10.0.0.2:5060".parse().unwrap());
        assert_eq!(t.transport, Transport::Udp);
        let t = Dest::parse("sip:bob@[fd00::2]:5070;transport=TCP")
            .unwrap()
            .literal()
            .unwrap();
        assert_eq!(t.addr, "[fd00::2]:5070".parse().unwrap());
        assert_eq!(t.transport, Transport::Tcp);
        let d = Dest::parse("sip:bob@[fd00::2]:5070").unwrap();
        let t = d.literal().unwrap();
        assert_eq!(t.addr, "[fd00::2]:5070".parse().unwrap());
        assert_eq!(t.transport, Transport::Udp);
        assert_eq!(Dest::parse("tel:+1555"), Err(TargetError::NotSipUri));
        assert_eq!(
            Dest::parse("sip:bob@a.test;transport=sctp"),
            Err(TargetError::Transport("other than udp/tcp/tls"))
        );
    }

    #[test]
    fn sips_and_transport_tls_go_over_tls_on_5061() {
        let d = Dest::parse("sips:bob@trunk.example.test").unwrap();
        assert!(d.secure);
        assert_eq!((d.port, d.transport), (None, Some(Transport::Tls)));
        let t = Dest::parse("sips:bob@10.0.0.2").unwrap().literal().unwrap();
        assert_eq!(
            (t.addr, t.transport),
            ("10.0.0.2:5061".parse().unwrap(), Transport::Tls)
        );
        assert_eq!(t.host, "10.0.0.2");
        let t = Dest::parse("sip:bob@10.0.0.2:5071;transport=TLS")
            .unwrap()
            .literal()
            .unwrap();
        assert_eq!(
            (t.addr, t.transport),
            ("10.0.0.2:5071".parse().unwrap(), Transport::Tls)
        );
        let d = Dest::parse("sips:bob@a.test;transport=tcp").unwrap();
        assert_eq!(d.transport, Some(Transport::Tls));
        assert_eq!(
            Dest::parse("sips:bob@a.test;transport=udp"),
            Err(TargetError::Transport("other than tcp/tls for sips:"))
        );
        assert_eq!(srv_name("a.test.", Transport::Tls), "_sips._tcp.a.test.");
    }

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let records = vec![
            srv(20, 0, "backup"),
            srv(10, 1, "light"),
            srv(10, 99, "heavy"),
        ];
        // A draw at the top of the range lands on the last (heaviest)
        // record of the group.
        let order: Vec<String> = srv_order(records.clone(), |total| total)
            .into_iter()
            .map(|s| s.target)
            .collect();
        assert_eq!(order, ["heavy", "light", "backup"]);
        // A draw of 1 lands on the first record with weight.
        let order: Vec<String> = srv_order(records, |_| 1)
            .into_iter()
            .map(|s| s.target)
            .collect();
        assert_eq!(order, ["light", "heavy", "backup"]);
    }

    #[test]
    fn zero_weights_are_drawn_too() {
        let order = srv_order(vec![srv(1, 0, "a"), srv(1, 0, "b")], |_| 0);
        assert_eq!(order.len(), 2);
    }

    #[tokio::test]
    async fn without_a_resolver_only_literals_are_dialled() {
        let r = Resolver::none();
        let lit = Dest::parse("sip:bob@192.0.2.7").unwrap();
        assert_eq!(
            r.targets(&lit).await.unwrap()[0].addr,
            "192.0.2.7:5060".parse().unwrap()
        );
        let name = Dest::parse("sip:bob@trunk.example.test").unwrap();
        assert_eq!(r.targets(&name).await, Err(Outcome::DNS_LOOKUP_FAILED));
    }
}
