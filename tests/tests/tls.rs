//! SIP over TLS in the rig: callers reach the edge's TLS listener (5061,
//! IPv4 and IPv6) with the rig's own CA and are judged exactly as over UDP
//! (digest with SHA-256 and MD5, failures counted, the lockout dropping the
//! TLS port in XDP); the answer_url hears `SIPTransport=tls`; the edge
//! dials `sips:` providers over TLS and checks their certificates (one from
//! a CA it does not trust ends `tls_certificate_failed`); a SIGHUP replaces
//! the certificate for new connections while open ones carry on.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::caller::{Caller, OFFER};
use sipauth_tests::calls::{expect_end, hangup_hit, id, record, until_edge_has};
use sipauth_tests::metric;
use sipauth_tests::pki::{Issued, issue};
use sipauth_tests::provider::{PASSWORD, Provider, Saw, Script, Then, USER};
use sipauth_tests::topo::{Link, Rig};
use sipauth_tests::wire::{Wire, tls_client_config, tls_server_config};

const ANSWER_AT: &str = "127.0.0.1:8090";
const EDGE_NAME: &str = "edge.sipauth.test";
const LOCKED_DROP: &str = r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#;

/// The edge's certificate (for its name and both addresses of caller 1's
/// link) and a provider's (for caller 2's address), each from its own CA;
/// `trusted.pem` holds both CAs, for the edge's `tls.ca_file`.
struct Pki {
    dir: tempfile::TempDir,
    edge: Issued,
    provider: Issued,
}

impl Pki {
    fn new(c: &Link, p: &Link) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).expect("mkdir");
            d
        };
        let edge = issue(
            &sub("edge"),
            &[EDGE_NAME, &c.edge_v4.to_string(), &c.edge_v6.to_string()],
        );
        let provider = issue(&sub("provider"), &[&p.v4.to_string()]);
        let both = [
            std::fs::read_to_string(&edge.ca).expect("edge CA"),
            std::fs::read_to_string(&provider.ca).expect("provider CA"),
        ]
        .concat();
        std::fs::write(dir.path().join("trusted.pem"), both).expect("trusted.pem");
        Self {
            dir,
            edge,
            provider,
        }
    }

    fn trusted(&self) -> std::path::PathBuf {
        self.dir.path().join("trusted.pem")
    }

    /// The `[tls]` section of the agent's configuration.
    fn section(&self) -> String {
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            self.edge.cert.display(),
            self.edge.key.display(),
            self.trusted().display()
        )
    }
}

fn options(pki: &Pki) -> Options {
    Options {
        sip_extra: "challenge_algorithms = [\"SHA-256\", \"MD5\"]\n".to_owned(),
        lockout: (3, 60, 60),
        // Every packet of a locked-out source is dropped in the kernel.
        budget_per_sec: 0,
        sections: pki.section(),
        ..Options::default()
    }
}

/// An answer server replying to `/answer` with whatever `xml` holds at
/// the time.
fn answer_server(rig: &Rig) -> (AnswerServer, Arc<Mutex<String>>) {
    AnswerServer::switchable(
        &rig.edge,
        ANSWER_AT.parse().unwrap(),
        RIG_AUTH_TOKEN,
        r#"<?xml version="1.0"?><Response><Hangup reason="rejected"/></Response>"#,
    )
}

/// A credential application for `pbx-user` / `Secret123`.
fn credential_app(agent: &Agent<'_>, answer: &AnswerServer) -> String {
    let cred = id(
        &agent.create(
            "SipAuth/Credential/",
            &json!({"username": "pbx-user", "password": "Secret123"}),
        ),
        "credential_uuid",
    );
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": "tls",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "credential",
                "credential_uuid": cred,
            }),
        ),
        "app_id",
    );
    until_edge_has(agent, &app);
    app
}

/// A TLS connection from caller `c` to the edge at `ip`, trusting `ca`.
fn connect(c: &Link, ip: std::net::IpAddr, name: &str, ca: &Path) -> std::io::Result<Wire> {
    Wire::connect_tls(
        &c.ns,
        SocketAddr::new(ip, 5061),
        name,
        tls_client_config(ca),
    )
}

/// An OPTIONS on `wire`; the status of its response.
fn options_on(wire: &mut Wire, c: &Link) -> Option<u16> {
    let local = wire.local();
    let req = format!(
        "OPTIONS sip:{EDGE_NAME} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{}>;tag=1\r\nTo: <sip:{EDGE_NAME}>\r\n\
         Call-ID: {}@rig\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sipauth_tests::wire::token(),
        c.v4,
        sipauth_tests::wire::token(),
    );
    wire.send(req.as_bytes());
    let (raw, _) = wire.recv(Duration::from_secs(5))?;
    sipauth_sip::parse(&raw).ok()?.status()
}

#[test]
fn callers_over_tls_are_challenged_counted_and_locked_out_as_over_udp() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let pki = Pki::new(c, p);
    let agent = Agent::start(&rig, &options(&pki));
    let (answer, _) = answer_server(&rig);
    let app = credential_app(&agent, &answer);

    // Right credentials, by name over IPv4 with SHA-256 and by address over
    // IPv6 with MD5: the answer_url decides (603 here) and hears the
    // transport.
    for (ip, name, alg) in [
        (c.edge_v4, EDGE_NAME.to_owned(), "SHA-256"),
        (c.edge_v6, c.edge_v6.to_string(), "MD5"),
    ] {
        let wire = connect(c, ip, &name, &pki.edge.ca)
            .unwrap_or_else(|e| panic!("TLS to {ip} as {name}: {e}\n{}", agent.log()));
        let local_ip = if ip.is_ipv4() { c.v4 } else { c.v6 };
        let edge = SocketAddr::new(ip, 5061);
        let mut call = Caller::invite_on(wire, local_ip, edge, &app, "alice", Some(OFFER));
        let challenged = call.final_response(Duration::from_secs(5)).expect("407");
        assert_eq!(challenged.code, 407, "{}", challenged.raw);
        assert!(
            challenged.raw.contains("Via: SIP/2.0/TLS "),
            "{}",
            challenged.raw
        );
        assert!(call.authenticate(&challenged, alg, "pbx-user", "Secret123", Some(OFFER)));
        let fin = call.final_response(Duration::from_secs(5)).expect("final");
        assert_eq!(fin.code, 603, "{alg}: {}\n{}", fin.raw, agent.log());
    }
    let hits = answer.wait_for(2);
    for h in hits.iter().filter(|h| h.path == "/answer") {
        assert!(h.signature_ok);
        assert_eq!(h.params["SIPTransport"], "tls", "{:?}", h.params);
        assert_eq!(h.params["SIPAuthUser"], "pbx-user");
    }

    // Wrong passwords over TLS count: the third locks the source out, and
    // XDP then drops its packets to the TLS port too.
    for i in 0..3 {
        let wire = connect(c, c.edge_v4, EDGE_NAME, &pki.edge.ca).expect("TLS");
        let edge = SocketAddr::new(c.edge_v4, 5061);
        let mut call = Caller::invite_on(wire, c.v4, edge, &app, "mallory", None);
        let challenged = call.final_response(Duration::from_secs(5)).expect("407");
        assert!(call.authenticate(&challenged, "MD5", "pbx-user", "Wrong999", None));
        let fin = call.final_response(Duration::from_secs(5)).expect("final");
        assert_eq!(fin.code, 403, "attempt {i}: {}", fin.raw);
    }
    let (_, locked) = agent.admin("GET", "/admin/lockouts", None);
    assert!(locked.contains(&c.v4.to_string()), "{locked}");
    let before = metric(&agent.metrics(), LOCKED_DROP);
    let refused = c.ns.enter(|| {
        TcpStream::connect_timeout(&SocketAddr::new(c.edge_v4, 5061), Duration::from_secs(1))
    });
    assert!(refused.is_err(), "a locked-out source reaches the TLS port");
    assert!(
        metric(&agent.metrics(), LOCKED_DROP) > before,
        "XDP dropped the TLS connection attempt"
    );
    let log = agent.stop();
    assert!(!log.contains("Secret123") && !log.contains("Wrong999"));
}

#[test]
fn a_bridged_call_runs_over_tls_on_both_legs_and_a_bad_certificate_has_its_cause() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let pki = Pki::new(c, p);
    let agent = Agent::start(&rig, &options(&pki));
    let (answer, xml) = answer_server(&rig);
    let app = credential_app(&agent, &answer);

    // The provider speaks TLS with a certificate from a CA the edge trusts,
    // answers, then hangs up: the edge passes the BYE to the caller over
    // the caller's TLS connection.
    let mut script = Script::new(true, Then::Answer);
    script.bye_after = Some(Duration::from_millis(300));
    let prov = Provider::start_tls(
        &p.ns,
        SocketAddr::new(p.v4, 5081),
        tls_server_config(&pki.provider.cert, &pki.provider.key),
        script,
    );
    let sips = format!("sips:bob@{}:5081", p.v4);
    *xml.lock().unwrap() = format!(
        r#"<?xml version="1.0"?><Response><Dial><User sipAuthUsername="{USER}" sipAuthPassword="{PASSWORD}">{sips}</User></Dial></Response>"#
    );
    let wire = connect(c, c.edge_v4, EDGE_NAME, &pki.edge.ca).expect("TLS");
    let edge = SocketAddr::new(c.edge_v4, 5061);
    let mut call = Caller::invite_on(wire, c.v4, edge, &app, "alice", Some(OFFER));
    let challenged = call.final_response(Duration::from_secs(5)).expect("407");
    assert!(call.authenticate(&challenged, "SHA-256", "pbx-user", "Secret123", Some(OFFER)));
    let fin = call.final_response(Duration::from_secs(10)).expect("final");
    assert_eq!(fin.code, 200, "{}\n{}", fin.raw, agent.log());
    let contact = Saw::header(&fin.raw, "Contact")
        .unwrap_or_default()
        .to_owned();
    assert!(contact.contains(";transport=tls"), "{contact}");
    call.ack(None);
    let bye = call
        .await_bye(Duration::from_secs(5))
        .expect("the edge's BYE");
    assert!(bye.contains("Via: SIP/2.0/TLS "), "{bye}");
    let saw = prov.finish(Duration::from_secs(2));
    let invite = saw.last("INVITE");
    assert!(invite.starts_with(&format!("INVITE {sips} ")), "{invite}");
    assert!(invite.contains("Via: SIP/2.0/TLS "), "{invite}");
    assert!(
        Saw::header(invite, "Contact").is_some_and(|c| c.contains(";transport=tls")),
        "{invite}"
    );
    assert!(
        Saw::header(invite, "Proxy-Authorization").is_some(),
        "{invite}"
    );

    // A provider whose certificate the edge cannot trust: a Make Call to
    // it ends tls_certificate_failed, and nothing is sent to it in clear.
    let rogue_dir = tempfile::tempdir().expect("temp dir");
    let rogue = issue(rogue_dir.path(), &[&p.v4.to_string()]);
    let untrusted = Provider::start_tls(
        &p.ns,
        SocketAddr::new(p.v4, 5082),
        tls_server_config(&rogue.cert, &rogue.key),
        Script::new(false, Then::Answer),
    );
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": format!("sip:bob@{}:5082;transport=tls", p.v4),
            "answer_url": answer.url("/answer"),
            "hangup_url": answer.url("/hangup"),
        }),
    );
    let uuid = id(&v, "request_uuid");
    let rec = record(&agent, &uuid);
    let h = hangup_hit(&answer, "/hangup", Some(&uuid));
    expect_end(&uuid, &h, &rec, "failed", ("tls_certificate_failed", 4160));
    assert!(untrusted.finish(Duration::ZERO).requests.is_empty());
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let pki = Pki::new(c, p);
    let agent = Agent::start(&rig, &options(&pki));
    let first_ca = pki.dir.path().join("first-ca.pem");
    std::fs::copy(&pki.edge.ca, &first_ca).expect("keep the first CA");
    let mut open = connect(c, c.edge_v4, EDGE_NAME, &first_ca).expect("TLS");
    assert_eq!(options_on(&mut open, c), Some(200));

    // A new CA and certificate in place of the old files, then SIGHUP.
    let renewed = issue(pki.edge.cert.parent().expect("dir"), &[EDGE_NAME]);
    assert_eq!(renewed.cert, pki.edge.cert);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(agent.pid()).expect("pid")).expect("pid"),
        rustix::process::Signal::HUP,
    )
    .expect("SIGHUP");
    let t = Instant::now();
    loop {
        if agent.log().contains("TLS certificate and key read again") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fresh = connect(c, c.edge_v4, EDGE_NAME, &renewed.ca).expect("TLS with the new CA");
    assert_eq!(options_on(&mut fresh, c), Some(200));
    assert!(
        connect(c, c.edge_v4, EDGE_NAME, &first_ca).is_err(),
        "the old certificate is no longer presented"
    );
    // The connection made before the reload carries on.
    assert_eq!(options_on(&mut open, c), Some(200));

    // Unusable files: the reload is refused and the certificate stays.
    std::fs::write(&pki.edge.key, "not a key").expect("break the key");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(agent.pid()).expect("pid")).expect("pid"),
        rustix::process::Signal::HUP,
    )
    .expect("SIGHUP");
    let t = Instant::now();
    while !agent.log().contains("the previous certificate stays") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut after = connect(c, c.edge_v4, EDGE_NAME, &renewed.ca).expect("TLS");
    assert_eq!(options_on(&mut after, c), Some(200));
}
