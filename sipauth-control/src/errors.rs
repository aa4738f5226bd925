//! Error answers of every HTTP endpoint (RFC 9110 section 15.5 and 15.6):
//! a JSON body `{"api_id": "...", "error": "..."}` with the status,
//! whichever part of the server made it: a handler, an extractor's
//! rejection (a body that is not JSON, a query string that does not parse,
//! a body over the size limit), the router's 404 for an unknown path and
//! 405 for a method a path does not take (which keeps its `Allow` header,
//! RFC 9110 15.5.6), or a handler that panicked (500).
#![forbid(unsafe_code)]

use std::any::Any;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

/// The most of a plain-text error body kept as the message.
const MAX_TEXT: usize = 4096;

/// A JSON body that could not be taken: 415 without a JSON Content-Type,
/// else 400 with what was wrong (axum would say 422 for a body that
/// parses but does not fit; this API says 400 for every bad field).
pub fn json_rejection(e: &JsonRejection) -> Response {
    let status = match e {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, e.body_text())
}

/// A fresh id for one answer.
#[must_use]
pub fn api_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `{"api_id", "error"}` with `status`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "api_id": api_id(), "error": message.into() })),
    )
        .into_response()
}

/// `app` with every error answer in the JSON shape: a fallback for
/// unknown paths, a layer that rewrites the error answers axum makes
/// itself (empty or plain text), and panics turned into 500.
pub fn json_errors(app: Router) -> Router {
    // Around the whole router, not per route (as `app.layer` would): the
    // router adds `Allow` to a 405 after its routes' layers have run.
    Router::new()
        .fallback_service(app.fallback(no_route))
        .layer(middleware::from_fn(as_json))
        .layer(CatchPanicLayer::custom(panicked))
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no such path: {method} {}", uri.path()),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Rewrites an error answer that is not JSON: its plain text (an
/// extractor's rejection says what was wrong) or, when empty, what the
/// status means here becomes `error`; the other headers stay.
async fn as_json(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let message = text.unwrap_or_else(|| default_message(status, &method, &path, &parts.headers));
    let mut out = error_response(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// What an empty error answer means.
fn default_message(status: StatusCode, method: &Method, path: &str, headers: &HeaderMap) -> String {
    match status {
        StatusCode::NOT_FOUND => format!("no such path: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .replace(',', ", ");
            format!("{method} is not allowed on {path}; allowed: {allowed}")
        }
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    }
}

/// 500 for a handler that panicked; what it said goes to the log only.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature CatchPanicLayer calls"
)]
fn panicked(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("?");
    tracing::error!(panic = %what, "an HTTP handler panicked");
    let mut r = error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Q {
        #[expect(dead_code, reason = "only its parsing is tested")]
        n: Option<u32>,
    }

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    fn app() -> Router {
        json_errors(
            Router::new()
                .route("/thing", post(|| async { "made" }))
                .route(
                    "/json",
                    post(|axum::Json(v): axum::Json<Value>| async move { v.to_string() }),
                )
                .route(
                    "/query",
                    get(|axum::extract::Query(_): axum::extract::Query<Q>| async { "ok" }),
                )
                .route("/empty", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
                .route(
                    "/text",
                    get(|| async {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "no",
                        )
                    }),
                )
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "plain success" })),
        )
    }

    async fn call(
        method: &str,
        uri: &str,
        ctype: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = ctype {
            req = req.header(header::CONTENT_TYPE, c);
        }
        let resp = app()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (parts.status, parts.headers, v)
    }

    fn assert_shape(h: &HeaderMap, v: &Value) -> String {
        assert!(is_json(h), "{h:?}");
        assert_eq!(v["api_id"].as_str().map(str::len), Some(36), "{v}");
        assert_eq!(v.as_object().map(serde_json::Map::len), Some(2), "{v}");
        v["error"].as_str().expect("error").to_owned()
    }

    #[tokio::test]
    async fn unknown_path_is_json_404() {
        let (s, h, v) = call("GET", "/nowhere", None, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(assert_shape(&h, &v), "no such path: GET /nowhere");
    }

    #[tokio::test]
    async fn wrong_method_is_json_405_with_allow() {
        let (s, h, v) = call("GET", "/thing", None, "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h[header::ALLOW], "POST");
        assert_eq!(
            assert_shape(&h, &v),
            "GET is not allowed on /thing; allowed: POST"
        );
        let (s, h, v) = call("DELETE", "/query", None, "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h[header::ALLOW], "GET,HEAD");
        assert!(assert_shape(&h, &v).ends_with("allowed: GET, HEAD"), "{v}");
    }

    #[tokio::test]
    async fn rejections_keep_their_reason() {
        let (s, h, v) = call("POST", "/json", Some("application/json"), "{nope").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(assert_shape(&h, &v).contains("as JSON"), "{v}");
        let (s, h, v) = call("POST", "/json", Some("text/plain"), "{}").await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(assert_shape(&h, &v).contains("application/json"), "{v}");
        let (s, h, v) = call("GET", "/query?n=x", None, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(assert_shape(&h, &v).contains("query string"), "{v}");
        let big = format!("[{}0]", "0,".repeat(1_100_000));
        let (s, h, v) = call("POST", "/json", Some("application/json"), &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(assert_shape(&h, &v).contains("length limit"), "{v}");
    }

    #[tokio::test]
    async fn empty_and_text_errors_become_json_keeping_headers() {
        let (s, h, v) = call("GET", "/empty", None, "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(assert_shape(&h, &v), "Service Unavailable");
        let (s, h, v) = call("GET", "/text", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(assert_shape(&h, &v), "no");
    }

    #[tokio::test]
    async fn a_panic_is_json_500() {
        let (s, h, v) = call("GET", "/boom", None, "").await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(assert_shape(&h, &v), "internal error");
    }

    #[tokio::test]
    async fn successes_are_left_alone() {
        let (s, h, v) = call("GET", "/fine", None, "").await;
        assert_eq!(s, StatusCode::OK);
        assert!(!is_json(&h));
        assert_eq!(v, "plain success");
    }
}
