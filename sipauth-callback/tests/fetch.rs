//! `Client` against HTTP(S) servers started on 127.0.0.1 by each test.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sipauth_callback::{
    Callback, Client, ClientOptions, FetchError, MAX_BODY_BYTES, Method, NONCE_DIGITS, Params,
    verify_v3,
};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "MAXXXXXXXXXXXXXXXXXXtoken";
const ANSWER_XML: &str = "<Response><Hangup reason=\"busy\"/></Response>";

/// What the server saw, per path.
#[derive(Clone, Default)]
struct Seen {
    hits: Arc<Mutex<HashMap<String, usize>>>,
    nonces: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

#[derive(Clone)]
struct AppState {
    seen: Seen,
    scheme: &'static str,
    addr: SocketAddr,
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let hit = {
        let mut hits = st.seen.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    match path.as_str() {
        "/answer" => check_signed(&st, req).await,
        "/flaky" if hit == 1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "/flaky" => ANSWER_XML.into_response(),
        "/unavailable" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ANSWER_XML.into_response()
        }
        "/big" => "x".repeat(MAX_BODY_BYTES + 1).into_response(),
        "/exact" => "y".repeat(MAX_BODY_BYTES).into_response(),
        "/big-chunked" => {
            // No Content-Length: the limit must hold while streaming.
            let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 64 * 1024]));
            Response::new(Body::new(StreamBody { items: chunks }))
        }
        "/redirect" => (StatusCode::FOUND, [("location", "/answer")]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A body of chunks without a length: hyper sends it chunked.
struct StreamBody<I> {
    items: I,
}

impl<I> axum::body::HttpBody for StreamBody<I>
where
    I: Iterator<Item = Result<Vec<u8>, std::io::Error>> + Unpin + Send + 'static,
{
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(
            self.items
                .next()
                .map(|r| r.map(|v| http_body::Frame::data(axum::body::Bytes::from(v)))),
        )
    }
}

/// Verifies the request the way a customer's server does with Plivo's SDK:
/// from the URL it was called on, the form parameters (POST) and the headers.
async fn check_signed(st: &AppState, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let url = format!("{}://{}{}", st.scheme, st.addr, req.uri());
    let headers: HeaderMap = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();

    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if header("user-agent") != "sipauth" {
        return (StatusCode::BAD_REQUEST, "user agent").into_response();
    }
    let nonce = header("x-plivo-signature-v3-nonce");
    if nonce.len() != NONCE_DIGITS || !nonce.bytes().all(|b| b.is_ascii_digit()) {
        return (StatusCode::BAD_REQUEST, "nonce").into_response();
    }
    st.seen.nonces.lock().unwrap().push(nonce.clone());

    let params: Vec<(String, String)> = if method == "POST" {
        if header("content-type") != "application/x-www-form-urlencoded" {
            return (StatusCode::BAD_REQUEST, "content type").into_response();
        }
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        if !body.is_empty() {
            return (StatusCode::BAD_REQUEST, "GET with body").into_response();
        }
        Vec::new()
    };
    if !verify_v3(
        TOKEN,
        &method,
        &url,
        &params,
        &nonce,
        &header("x-plivo-signature-v3"),
    ) {
        return (StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    // Echo what arrived so the test can check it: the method, then the
    // parameters as the server decoded them (form body, or query string).
    let seen_params: Vec<(String, String)> = if method == "POST" {
        params
    } else {
        url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    };
    let mut out = format!("{method}\n");
    for (k, v) in seen_params {
        writeln!(out, "{k}={v}").unwrap();
    }
    out.into_response()
}

async fn start_http() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let app = Router::new().fallback(handle).with_state(AppState {
        seen: seen.clone(),
        scheme: "http",
        addr,
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn call_params() -> Params {
    vec![
        ("CallUUID", "4b1c2f5e-0000-4000-8000-000000000001".into()),
        ("From", "+15550001111".into()),
        ("To", "sip:alice@127.0.0.1".into()),
        ("Direction", "inbound".into()),
        ("SIP-H-X-Odd", "a&b=c d+e%f".into()),
    ]
}

fn literal_client(timeout: Duration) -> Client {
    Client::with_options(&ClientOptions {
        literal_hosts_only: true,
        ..ClientOptions::new(timeout)
    })
    .unwrap()
}

fn expected_echo<K: std::fmt::Display, V: std::fmt::Display>(
    method: &str,
    pairs: &[(K, V)],
) -> String {
    let mut out = format!("{method}\n");
    for (k, v) in pairs {
        writeln!(out, "{k}={v}").unwrap();
    }
    out
}

#[tokio::test]
async fn post_is_form_encoded_and_signed() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/answer?app=7&x=a%20b");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    let body = client.fetch(&cb).await.unwrap();
    assert_eq!(body, expected_echo("POST", &call_params()));
    assert_eq!(seen.hits("/answer"), 1);
}

#[tokio::test]
async fn get_params_go_in_query_and_are_signed() {
    let (addr, _seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/answer?app=7");
    let cb = Callback {
        url: &url,
        method: Method::Get,
        params: call_params(),
        auth_token: TOKEN,
    };
    let body = client.fetch(&cb).await.unwrap();
    let mut expected: Params = vec![("app", "7".into())];
    expected.extend(call_params());
    assert_eq!(body, expected_echo("GET", &expected));

    // Without a query of its own, and without params.
    let url = format!("http://{addr}/answer");
    let cb = Callback {
        url: &url,
        method: Method::Get,
        params: vec![],
        auth_token: TOKEN,
    };
    assert_eq!(client.fetch(&cb).await.unwrap(), "GET\n");
}

#[tokio::test]
async fn wrong_token_is_refused_by_the_server() {
    let (addr, _seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/answer");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: "other",
    };
    assert!(matches!(
        client.fetch(&cb).await,
        Err(FetchError::Status(403))
    ));
}

#[tokio::test]
async fn fresh_nonce_per_request() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/answer");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    client.fetch(&cb).await.unwrap();
    client.notify(&cb).await.unwrap();
    let nonces = seen.nonces.lock().unwrap().clone();
    assert_eq!(nonces.len(), 2);
    assert_ne!(nonces[0], nonces[1]);
}

#[tokio::test]
async fn retries_once_after_500() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/flaky");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    assert_eq!(client.fetch(&cb).await.unwrap(), ANSWER_XML);
    assert_eq!(seen.hits("/flaky"), 2);
}

#[tokio::test]
async fn gives_up_after_second_5xx() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/unavailable");
    let cb = Callback {
        url: &url,
        method: Method::Get,
        params: vec![],
        auth_token: TOKEN,
    };
    assert!(matches!(
        client.notify(&cb).await,
        Err(FetchError::Status(503))
    ));
    assert_eq!(seen.hits("/unavailable"), 2);
}

#[tokio::test]
async fn no_retry_on_404() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/missing");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    assert!(matches!(
        client.fetch(&cb).await,
        Err(FetchError::Status(404))
    ));
    assert_eq!(seen.hits("/missing"), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("http://{addr}/redirect");
    let cb = Callback {
        url: &url,
        method: Method::Get,
        params: vec![],
        auth_token: TOKEN,
    };
    assert!(matches!(
        client.fetch(&cb).await,
        Err(FetchError::Status(302))
    ));
    assert_eq!(seen.hits("/answer"), 0);
}

#[tokio::test]
async fn timeout_per_attempt_then_one_retry() {
    let (addr, seen) = start_http().await;
    let timeout = Duration::from_millis(300);
    let client = literal_client(timeout);
    let url = format!("http://{addr}/slow");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    let started = Instant::now();
    let result = client.fetch(&cb).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
    assert_eq!(seen.hits("/slow"), 2);
    // Two attempts of 300 ms each.
    assert!(
        elapsed + Duration::from_millis(50) >= timeout * 2,
        "{elapsed:?}"
    );
    assert!(
        elapsed < timeout * 2 + Duration::from_millis(700),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn connect_refused_is_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = literal_client(Duration::from_secs(2));
    let url = format!("http://{addr}/answer");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: vec![],
        auth_token: TOKEN,
    };
    assert!(matches!(
        client.fetch(&cb).await,
        Err(FetchError::Connect(_))
    ));
}

#[tokio::test]
async fn body_limit() {
    let (addr, seen) = start_http().await;
    let client = literal_client(Duration::from_secs(5));
    for path in ["/big", "/big-chunked"] {
        let url = format!("http://{addr}{path}");
        let cb = Callback {
            url: &url,
            method: Method::Get,
            params: vec![],
            auth_token: TOKEN,
        };
        assert!(
            matches!(client.fetch(&cb).await, Err(FetchError::Body(_))),
            "{path}"
        );
        assert_eq!(seen.hits(path), 1, "{path}: body errors are not retried");
    }
    let url = format!("http://{addr}/exact");
    let cb = Callback {
        url: &url,
        method: Method::Get,
        params: vec![],
        auth_token: TOKEN,
    };
    assert_eq!(client.fetch(&cb).await.unwrap().len(), MAX_BODY_BYTES);
    // notify does not read the body, so the limit does not apply.
    let url = format!("http://{addr}/big");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: vec![],
        auth_token: TOKEN,
    };
    client.notify(&cb).await.unwrap();
}

#[tokio::test]
async fn url_rejections_send_nothing() {
    let client = literal_client(Duration::from_secs(1));
    for url in [
        "ftp://127.0.0.1/x",
        "http://callbacks.example/answer",
        "relative/path",
        "http://",
    ] {
        let cb = Callback {
            url,
            method: Method::Post,
            params: vec![],
            auth_token: TOKEN,
        };
        assert!(
            matches!(client.fetch(&cb).await, Err(FetchError::Url(_))),
            "{url}"
        );
    }
}

// ---- HTTPS ----------------------------------------------------------------

struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// Connections whose handshake completed.
    sessions: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // Failed handshakes (a client that rejects the certificate) are
            // expected in these tests.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                self.sessions.fetch_add(1, Ordering::SeqCst);
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS server with a fresh self-signed certificate for 127.0.0.1;
/// returns its address, the certificate (PEM), the hit counters and the
/// count of TLS sessions it accepted.
async fn start_https() -> anyhow::Result<(SocketAddr, Vec<u8>, Seen, Arc<AtomicUsize>)> {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let cert_der = certified.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der)?;

    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let seen = Seen::default();
    let app = Router::new().fallback(handle).with_state(AppState {
        seen: seen.clone(),
        scheme: "https",
        addr,
    });
    let sessions = Arc::new(AtomicUsize::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        sessions: sessions.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Ok((addr, certified.cert.pem().into_bytes(), seen, sessions))
}

#[tokio::test]
async fn https_with_trusted_root_over_one_kept_connection() -> anyhow::Result<()> {
    let (addr, pem, seen, sessions) = start_https().await?;
    let client = Client::with_options(&ClientOptions {
        literal_hosts_only: true,
        extra_root_certs_pem: vec![pem],
        ..ClientOptions::new(Duration::from_secs(5))
    })?;
    let url = format!("https://{addr}/answer?app=7");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    for _ in 0..3 {
        assert_eq!(
            client.fetch(&cb).await?,
            expected_echo("POST", &call_params())
        );
    }
    assert_eq!(seen.hits("/answer"), 3);
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        1,
        "one TLS session carries all three"
    );
    Ok(())
}

#[tokio::test]
async fn https_untrusted_certificate_is_connect_error() -> anyhow::Result<()> {
    let (addr, _pem, seen, _) = start_https().await?;
    let client = literal_client(Duration::from_secs(5));
    let url = format!("https://{addr}/answer");
    let cb = Callback {
        url: &url,
        method: Method::Post,
        params: call_params(),
        auth_token: TOKEN,
    };
    let result = client.fetch(&cb).await;
    assert!(matches!(result, Err(FetchError::Connect(_))), "{result:?}");
    assert_eq!(seen.hits("/answer"), 0);
    Ok(())
}
