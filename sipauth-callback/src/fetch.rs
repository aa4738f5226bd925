//! Fetching `answer_url` and notifying `hangup_url`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use url::Position;

use crate::signature::signature_v3;
use crate::transport::{BodyError, Origin, Pool, Request, SendError};

/// Largest response body [`Client::fetch`] accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Length of the decimal nonce sent in `X-Plivo-Signature-V3-Nonce`.
pub const NONCE_DIGITS: usize = 20;
/// The `User-Agent` of callback requests.
pub const USER_AGENT: &str = "sipauth";

const SIGNATURE_HEADER: &str = "X-Plivo-Signature-V3";
const NONCE_HEADER: &str = "X-Plivo-Signature-V3-Nonce";
const ATTEMPTS: u32 = 2;
/// Parsed callback URLs kept at most; past this many the memory starts
/// again empty (a deployment has a few per application).
const TARGETS_KEPT: usize = 4096;

/// Callback URLs as configured, each with what parsing it gave.
#[derive(Default)]
struct Targets(std::sync::Mutex<std::collections::HashMap<String, Arc<Target>>>);

struct Target {
    url: url::Url,
    origin: Origin,
}

/// HTTP method of a callback, as configured with the URL (`answer_method`,
/// `hangup_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A callback's parameters, in order: names are fixed by the API, and a
/// value the call holds for good (a direction, a status) is not copied.
pub type Params = Vec<(&'static str, Cow<'static, str>)>;

/// One callback request: where, how, with which call parameters, and the
/// auth token that signs it.
#[derive(Clone)]
pub struct Callback<'a> {
    pub url: &'a str,
    pub method: Method,
    pub params: Params,
    pub auth_token: &'a str,
}

impl fmt::Debug for Callback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("params", &self.params)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// Why a callback failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not a valid `http`/`https` URL, or names a host by name
    /// while the client only accepts IP literals.
    #[error("callback URL rejected: {0}")]
    Url(String),
    /// Connecting or sending failed (refused, reset, TLS handshake, ...).
    #[error("callback connection failed: {0}")]
    Connect(String),
    /// An attempt took longer than the configured timeout.
    #[error("callback timed out")]
    Timeout,
    /// The server answered with a non-2xx status (redirects are not followed).
    #[error("callback answered with HTTP status {0}")]
    Status(u16),
    /// The body could not be read, was larger than [`MAX_BODY_BYTES`], or was
    /// not UTF-8.
    #[error("callback body unusable: {0}")]
    Body(String),
}

impl FetchError {
    fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect(_) | FetchError::Timeout => true,
            FetchError::Status(code) => (500..=599).contains(code),
            FetchError::Url(_) | FetchError::Body(_) => false,
        }
    }
}

/// The HTTP client could not be built from [`ClientOptions`].
#[derive(Debug, thiserror::Error)]
#[error("callback client configuration: {0}")]
pub struct ConfigError(String);

/// Settings of a [`Client`] beyond the timeout.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Connect timeout, and total timeout of each attempt (connect, request,
    /// response headers and body).
    pub timeout: Duration,
    /// Accept only URLs whose host is an IP literal; a host name is rejected
    /// with [`FetchError::Url`] before anything is resolved.
    pub literal_hosts_only: bool,
    /// Extra trust anchors (PEM) for HTTPS, besides the bundled web PKI roots.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
}

impl ClientOptions {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            literal_hosts_only: false,
            extra_root_certs_pem: Vec::new(),
        }
    }
}

/// Fetches signed callbacks over kept-alive connections. Cheap to clone;
/// share one per process.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
    targets: Arc<Targets>,
    timeout: Duration,
    literal_hosts_only: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("literal_hosts_only", &self.literal_hosts_only)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `timeout` as connect timeout and as total timeout of each
    /// attempt. A request is retried once on connect errors, timeouts and 5xx
    /// answers (not on 4xx), so a call can take up to twice `timeout`.
    ///
    /// # Panics
    ///
    /// If the TLS backend cannot be initialised.
    pub fn new(timeout: Duration) -> Self {
        Self::with_options(&ClientOptions::new(timeout)).expect("default callback client builds")
    }

    pub fn with_options(options: &ClientOptions) -> Result<Self, ConfigError> {
        let pool = Pool::new(&options.extra_root_certs_pem).map_err(ConfigError)?;
        Ok(Self {
            pool: Arc::new(pool),
            targets: Arc::default(),
            timeout: options.timeout,
            literal_hosts_only: options.literal_hosts_only,
        })
    }

    /// Requests `cb` and returns the response body (at most
    /// [`MAX_BODY_BYTES`], UTF-8).
    ///
    /// POST sends the parameters as a form body; GET appends them to the
    /// query string. Every attempt carries `X-Plivo-Signature-V3` with a fresh
    /// `X-Plivo-Signature-V3-Nonce` of [`NONCE_DIGITS`] random digits.
    pub async fn fetch(&self, cb: &Callback<'_>) -> Result<String, FetchError> {
        let body = self.run(cb, true).await?;
        Ok(body.unwrap_or_default())
    }

    /// Like [`Client::fetch`], for `hangup_url`: the body is not read.
    pub async fn notify(&self, cb: &Callback<'_>) -> Result<(), FetchError> {
        self.run(cb, false).await.map(drop)
    }

    async fn run(&self, cb: &Callback<'_>, read_body: bool) -> Result<Option<String>, FetchError> {
        let target = self.target(cb.url)?;
        let url = request_url(&target.url, cb);
        let mut attempt = 1;
        loop {
            match self.attempt(cb, &url, &target.origin, read_body).await {
                Err(e) if attempt < ATTEMPTS && e.is_retryable() => {
                    tracing::debug!(url = %shown(&url), error = %e, "callback attempt failed; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A configured URL, checked and parsed once: an application's few
    /// callback URLs serve every one of its calls.
    fn target(&self, configured: &str) -> Result<Arc<Target>, FetchError> {
        if let Some(t) = self
            .targets
            .0
            .lock()
            .expect("callback URLs")
            .get(configured)
        {
            return Ok(t.clone());
        }
        let url = self.checked(configured)?;
        // `checked` has seen an http or https URL with a host.
        let origin = Origin::of(&url).ok_or_else(|| FetchError::Url("no host".to_owned()))?;
        let target = Arc::new(Target { url, origin });
        let mut kept = self.targets.0.lock().expect("callback URLs");
        if kept.len() >= TARGETS_KEPT {
            kept.clear();
        }
        kept.insert(configured.to_owned(), target.clone());
        Ok(target)
    }

    fn checked(&self, configured: &str) -> Result<url::Url, FetchError> {
        let url = url::Url::parse(configured).map_err(|e| FetchError::Url(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Url(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        match url.host() {
            None => Err(FetchError::Url("no host".to_owned())),
            Some(url::Host::Domain(name)) if self.literal_hosts_only => Err(FetchError::Url(
                format!("host {name:?} is a name; only IP literals are accepted"),
            )),
            Some(_) => Ok(url),
        }
    }

    async fn attempt(
        &self,
        cb: &Callback<'_>,
        url: &url::Url,
        origin: &Origin,
        read_body: bool,
    ) -> Result<Option<String>, FetchError> {
        let nonce = new_nonce();
        let signature = signature_v3(
            cb.auth_token,
            cb.method.as_str(),
            cb.url,
            &cb.params,
            &nonce,
        );
        let body = match cb.method {
            Method::Get => String::new(),
            Method::Post => {
                // Room for the pairs as they are and a little encoding.
                let room: usize = cb.params.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
                form_urlencoded::Serializer::new(String::with_capacity(room + room / 8))
                    .extend_pairs(&cb.params)
                    .finish()
            }
        };
        let credentials = basic_credentials(url);
        let mut headers = vec![
            ("User-Agent", USER_AGENT),
            (SIGNATURE_HEADER, signature.as_str()),
            (NONCE_HEADER, nonce.as_str()),
        ];
        if cb.method == Method::Post {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        if let Some(credentials) = &credentials {
            headers.push(("Authorization", credentials.as_str()));
        }
        // The URL crate has percent-encoded path, query and host: no line
        // breaks can reach the request head from them.
        let request = Request {
            method: cb.method.as_str(),
            target: &url[Position::BeforePath..Position::AfterQuery],
            host: &url[Position::BeforeHost..Position::AfterPort],
            headers: &headers,
            body: body.as_bytes(),
        };
        let exchange = self
            .pool
            .exchange(origin, &request, read_body, MAX_BODY_BYTES);
        let reply = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => return Err(FetchError::Timeout),
            Ok(Err(SendError(e))) => return Err(FetchError::Connect(e)),
            Ok(Ok(reply)) => reply,
        };
        if !(200..300).contains(&reply.status) {
            return Err(FetchError::Status(reply.status));
        }
        match reply.body {
            None => Ok(None),
            Some(Err(BodyError::TooLarge)) => Err(too_large()),
            Some(Err(BodyError::Read(e))) => Err(FetchError::Body(e)),
            Some(Ok(body)) => String::from_utf8(body)
                .map(Some)
                .map_err(|_| FetchError::Body("body is not UTF-8".to_owned())),
        }
    }
}

/// The URL a callback goes to: the configured one as it is, or, for a GET
/// with parameters, a copy with them added to its query.
fn request_url<'u>(configured: &'u url::Url, cb: &Callback<'_>) -> Cow<'u, url::Url> {
    if cb.method == Method::Get && !cb.params.is_empty() {
        let mut url = configured.clone();
        url.query_pairs_mut().extend_pairs(&cb.params);
        Cow::Owned(url)
    } else {
        Cow::Borrowed(configured)
    }
}

/// `Authorization: Basic` from the URL's user information
/// (`https://user:password@host/...`), as browsers and HTTP clients do.
/// It goes only into the request, never into a log line.
fn basic_credentials(url: &url::Url) -> Option<String> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or_default())
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    Some(format!("Basic {encoded}"))
}

/// The URL as logs show it: scheme, host, port and path (no user
/// information, no query with the call's parameters).
fn shown(url: &url::Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[Position::BeforeHost..Position::AfterPath]
    )
}

fn too_large() -> FetchError {
    FetchError::Body(format!("body exceeds {MAX_BODY_BYTES} bytes"))
}

fn new_nonce() -> String {
    let mut rng = rand::rng();
    (0..NONCE_DIGITS)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_twenty_digits_and_varies() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), NONCE_DIGITS);
        assert!(a.bytes().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b);
    }

    #[test]
    fn callback_debug_redacts_token() {
        let cb = Callback {
            url: "http://127.0.0.1/a",
            method: Method::Post,
            params: vec![("CallUUID", "u".into())],
            auth_token: "s3cr3t-token",
        };
        let shown = format!("{cb:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn urls_rejected() {
        let literal = Client::with_options(&ClientOptions {
            literal_hosts_only: true,
            ..ClientOptions::new(Duration::from_secs(1))
        })
        .unwrap();
        assert!(matches!(
            literal.target("ftp://127.0.0.1/x"),
            Err(FetchError::Url(_))
        ));
        assert!(matches!(
            literal.target("not a url"),
            Err(FetchError::Url(_))
        ));
        assert!(matches!(
            literal.target("https://example.com/x"),
            Err(FetchError::Url(_))
        ));
        assert!(literal.target("https://[::1]:8443/x").is_ok());
        assert!(literal.target("http://127.0.0.1:8080/x").is_ok());
        let any = Client::new(Duration::from_secs(1));
        assert!(any.target("https://example.com/x").is_ok());
    }

    #[test]
    fn user_information_becomes_basic_credentials_and_stays_out_of_logs() {
        let url = url::Url::parse("https://ops%40example:p%3Ass@cb.example/answer?x=1").unwrap();
        let value = basic_credentials(&url).unwrap();
        let encoded = value.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"ops@example:p:ss");
        assert_eq!(shown(&url), "https://cb.example/answer");
        let plain = url::Url::parse("http://127.0.0.1/a").unwrap();
        assert!(basic_credentials(&plain).is_none());
    }

    #[test]
    fn a_url_is_parsed_once_and_a_rejected_one_not_kept() {
        let client = Client::new(Duration::from_secs(1));
        let a = client.target("http://127.0.0.1:8090/answer").unwrap();
        let b = client.target("http://127.0.0.1:8090/answer").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(client.target("ftp://127.0.0.1/x").is_err());
        assert_eq!(client.targets.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn get_params_appended_to_existing_query() {
        let client = Client::new(Duration::from_secs(1));
        let cb = Callback {
            url: "http://127.0.0.1/a?x=1",
            method: Method::Get,
            params: vec![("From", "+1 555".into())],
            auth_token: "t",
        };
        assert_eq!(
            request_url(&client.target(cb.url).unwrap().url, &cb).as_str(),
            "http://127.0.0.1/a?x=1&From=%2B1+555"
        );
    }
}
