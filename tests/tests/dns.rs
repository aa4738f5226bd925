//! Outbound targets that name hosts, looked up as RFC 3263 says through a
//! DNS server the test starts (dnsmasq in the provider's namespace, names
//! under `.test`, RFC 6761), never through the machine's resolver: a name
//! with a port (A), a name with a transport (SRV, the first target refusing
//! so the next is tried), a bare name (NAPTR to SRV), a name nobody
//! knows (`dns_lookup_failed`), and a `sips:` name (`_sips._tcp` SRV, TLS,
//! the certificate checked for the URI's host).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{expect_end, hangup_hit, record, sipp_provider, sipp_result};
use sipauth_tests::provider::{Provider, Saw, Script, Then};
use sipauth_tests::topo::{Link, Rig};
use sipauth_tests::wire::tls_server_config;

const ANSWER: &str = "127.0.0.1:8090";
const HANGUP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#;
const USER: &str = "prov-user";
/// The password the sipp scenarios check.
const PASSWORD: &str = "Prov-Pass-7781";

/// dnsmasq answering for `.test` on the provider's address, ended when
/// dropped.
struct Dns {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Dns {
    fn start(p: &Link) -> Self {
        let ip = p.v4.to_string();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child =
            p.ns.cmd("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--user=root",
                    "--pid-file",
                    "--log-queries",
                    "--local=/test/",
                ])
                .arg(format!("--listen-address={ip}"))
                .arg(format!("--log-facility={}", log.path().display()))
                .arg(format!("--host-record=provider.test,{ip}"))
                .arg(format!("--host-record=dead.test,{ip}"))
                // trunk.test: a target that refuses (nothing on 5099), then the
                // provider.
                .arg("--srv-host=_sip._udp.trunk.test,dead.test,5099,10,10")
                .arg("--srv-host=_sip._udp.trunk.test,provider.test,5082,20,10")
                .arg("--srv-host=_sip._udp.trunk2.test,provider.test,5083,10,10")
                .arg("--naptr-record=naptr.test,10,10,S,SIP+D2U,,_sip._udp.trunk2.test")
                // secure.test: SIP over TLS only, at provider.test:5085.
                .arg("--srv-host=_sips._tcp.secure.test,provider.test,5085,10,10")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
        let dns = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dns.log().contains("started") {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start:\n{}",
                dns.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn make_call(agent: &Agent<'_>, answer: &AnswerServer, to: &str) -> String {
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": to,
            "answer_url": answer.url("/answer"),
            "hangup_url": answer.url("/hangup"),
            "sip_auth_username": USER,
            "sip_auth_password": PASSWORD,
        }),
    );
    v["request_uuid"].as_str().expect("request_uuid").to_owned()
}

fn ends(agent: &Agent<'_>, answer: &AnswerServer, uuid: &str, status: &str, cause: (&str, i64)) {
    let rec = record(agent, uuid);
    let h = hangup_hit(answer, "/hangup", Some(uuid));
    expect_end(uuid, &h, &rec, status, cause);
}

#[test]
fn names_are_looked_up_by_a_srv_and_naptr_with_failover() {
    let rig = Rig::new(2);
    let p = rig.caller(1);
    let dns = Dns::start(p);
    let opts = Options {
        sections: format!("[dns]\nservers = [\"{}:53\"]\ntimeout_ms = 1000\n", p.v4),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), HANGUP, RIG_AUTH_TOKEN);

    for (to, port) in [
        // A name and a port: its A record.
        ("sip:bob@provider.test:5081", 5081),
        // A name and a transport: SRV; dead.test:5099 refuses, the next
        // target answers.
        ("sip:bob@trunk.test;transport=udp", 5082),
        // A bare name: NAPTR, then SRV.
        ("sip:bob@naptr.test", 5083),
    ] {
        let sipp = sipp_provider(p, "provider_407.xml", port, false);
        let uuid = make_call(&agent, &answer, to);
        sipp_result(sipp).unwrap_or_else(|e| panic!("{to}: {e}\n{}", agent.log()));
        ends(&agent, &answer, &uuid, "completed", ("normal_hangup", 4000));
    }
    // A name the server does not know.
    let uuid = make_call(&agent, &answer, "sip:bob@nowhere.test");
    ends(
        &agent,
        &answer,
        &uuid,
        "failed",
        ("dns_lookup_failed", 4150),
    );

    let log = agent.stop();
    assert!(log.contains("trying the next target"), "{log}");
    let asked = dns.log();
    for q in [
        "provider.test",
        "_sip._udp.trunk.test",
        "naptr.test",
        "nowhere.test",
    ] {
        assert!(asked.contains(q), "dnsmasq was not asked for {q}:\n{asked}");
    }
}

#[test]
fn a_sips_name_is_reached_through_its_sips_srv_over_tls() {
    let rig = Rig::new(2);
    let p = rig.caller(1);
    let dns = Dns::start(p);
    // RFC 5922 7.2: the certificate is for the URI's host (secure.test),
    // not for the SRV target (provider.test).
    let pki = tempfile::tempdir().expect("temp dir");
    let cert = sipauth_tests::pki::issue(pki.path(), &["secure.test"]);
    let opts = Options {
        sections: format!(
            "[dns]\nservers = [\"{}:53\"]\ntimeout_ms = 1000\n[tls]\nca_file = \"{}\"\n",
            p.v4,
            cert.ca.display()
        ),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), HANGUP, RIG_AUTH_TOKEN);
    let mut script = Script::new(true, Then::Answer);
    script.bye_after = Some(std::time::Duration::from_millis(200));
    let prov = Provider::start_tls(
        &p.ns,
        std::net::SocketAddr::new(p.v4, 5085),
        tls_server_config(&cert.cert, &cert.key),
        script,
    );
    let uuid = make_call(&agent, &answer, "sips:bob@secure.test");
    ends(&agent, &answer, &uuid, "completed", ("normal_hangup", 4000));
    let saw = prov.finish(Duration::from_secs(2));
    let invite = saw.last("INVITE");
    assert!(
        invite.starts_with("INVITE sips:bob@secure.test SIP/2.0"),
        "{invite}\n{}",
        agent.log()
    );
    assert!(invite.contains("Via: SIP/2.0/TLS "), "{invite}");
    assert!(
        Saw::header(invite, "Proxy-Authorization").is_some(),
        "{invite}"
    );
    let asked = dns.log();
    assert!(asked.contains("_sips._tcp.secure.test"), "{asked}");
}
