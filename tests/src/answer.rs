//! A customer's answer_url server, inside a namespace: it records each
//! callback with its parameters and whether the X-Plivo-Signature-V3
//! verifies, and answers with the XML it was given.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::Netns;

#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub params: HashMap<String, String>,
    pub signature_ok: bool,
    pub raw: String,
}

pub struct AnswerServer {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl AnswerServer {
    /// Listens on `addr` inside `ns`; every request gets `xml`.
    pub fn start(ns: &Netns, addr: SocketAddr, xml: &str, auth_token: &str) -> Self {
        let xml = xml.to_owned();
        Self::start_with(ns, addr, auth_token, move |_| xml.clone())
    }

    /// Listens on `addr` inside `ns`; `/answer` gets whatever the returned
    /// cell holds at the time (`answer` to begin with), every other path
    /// `<Hangup/>`.
    pub fn switchable(
        ns: &Netns,
        addr: SocketAddr,
        auth_token: &str,
        answer: &str,
    ) -> (Self, Arc<Mutex<String>>) {
        let xml = Arc::new(Mutex::new(answer.to_owned()));
        let x = xml.clone();
        let server = Self::start_with(ns, addr, auth_token, move |h| {
            if h.path == "/answer" {
                x.lock().expect("answer XML").clone()
            } else {
                r#"<?xml version="1.0"?><Response><Hangup/></Response>"#.to_owned()
            }
        });
        (server, xml)
    }

    /// Listens on `addr` inside `ns`; each request gets the XML `reply`
    /// gives for it.
    pub fn start_with(
        ns: &Netns,
        addr: SocketAddr,
        auth_token: &str,
        reply: impl Fn(&Hit) -> String + Send + 'static,
    ) -> Self {
        let listener = ns.enter(|| TcpListener::bind(addr).expect("bind answer server"));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (h, token) = (hits.clone(), auth_token.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let xml = match read(&mut stream, addr, &token) {
                    Some(hit) => {
                        let xml = reply(&hit);
                        h.lock().expect("hits").push(hit);
                        xml
                    }
                    None => String::new(),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                );
            }
        });
        Self { addr, hits }
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    #[must_use]
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    /// The hits on `path`.
    #[must_use]
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Waits up to 5 s for at least `n` hits on `/answer`, and returns them.
    pub fn wait_for(&self, n: usize) -> Vec<Hit> {
        let t = Instant::now();
        loop {
            let hits = self.hits_on("/answer");
            if hits.len() >= n || t.elapsed() > Duration::from_secs(5) {
                return hits;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read(stream: &mut std::net::TcpStream, addr: SocketAddr, token: &str) -> Option<Hit> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let form = if method == "GET" {
        query
    } else {
        body.as_str()
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    // The signature covers the URL as configured: the query is part of it
    // for GET, and POST parameters are the body.
    let url = format!("http://{addr}{path}");
    let signature_ok = sipauth_callback::verify_v3(
        token,
        &method,
        &url,
        &pairs,
        headers
            .get("x-plivo-signature-v3-nonce")
            .map_or("", String::as_str),
        headers
            .get("x-plivo-signature-v3")
            .map_or("", String::as_str),
    );
    Some(Hit {
        method,
        path: path.to_owned(),
        params: pairs.into_iter().collect(),
        signature_ok,
        raw: format!("{line}{body}"),
    })
}
