//! `X-Plivo-Signature-V3` against the vectors in Plivo's Go SDK tests
//! (plivo-go `utils_test.go`, `TestValidateSignatureV3Pass1`..`4`).

use base64::Engine as _;
use hmac::Mac as _;
use sipauth_callback::{signature_v3, verify_v3};

const TOKEN: &str = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4";
const NONCE: &str = "31627761595286130198";
const URL_QUERY: &str =
    "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml/?a=b&c=d";
const URL_PLAIN: &str = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml";

fn params() -> Vec<(String, String)> {
    [
        ("Direction", "outbound"),
        ("From", "19792014278"),
        ("ALegUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("CallStatus", "in-progress"),
        ("BillRate", "0.002"),
        ("ParentAuthID", "MANWVLYTK4ZWU1YTY4QA"),
        (
            "To",
            "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
        ),
        ("ALegRequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("CallUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("RequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        (
            "SIP-H-To",
            "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
        ),
        ("SessionStart", "2020-04-08 11:34:33.238707"),
        ("Event", "StartApp"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn plivo_vectors() {
    let p = params();
    let cases = [
        (
            "POST",
            URL_QUERY,
            "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=",
        ),
        (
            "GET",
            URL_QUERY,
            "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ=",
        ),
        (
            "POST",
            URL_PLAIN,
            "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=",
        ),
        (
            "GET",
            URL_PLAIN,
            "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc=",
        ),
    ];
    for (method, url, expected) in cases {
        assert_eq!(
            signature_v3(TOKEN, method, url, &p, NONCE),
            expected,
            "{method} {url}"
        );
        assert!(
            verify_v3(TOKEN, method, url, &p, NONCE, expected),
            "{method} {url}"
        );
    }
}

#[test]
fn param_order_does_not_matter() {
    let mut p = params();
    p.reverse();
    assert_eq!(
        signature_v3(TOKEN, "POST", URL_PLAIN, &p, NONCE),
        "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="
    );
}

/// GET: the receiver sees every parameter in the query string and passes no
/// separate params; it must compute the same signature as the sender.
#[test]
fn get_params_in_query_equal_separate_params() {
    let p = params();
    let mut full = url::Url::parse(URL_QUERY).unwrap();
    full.query_pairs_mut().extend_pairs(&p);
    assert_eq!(
        signature_v3(TOKEN, "GET", full.as_str(), &[] as &[(&str, &str)], NONCE),
        "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="
    );
}

/// An independent computation written from the description of the scheme.
#[test]
fn matches_hand_built_string() {
    let p = vec![
        ("To".to_owned(), "sip:a@b".to_owned()),
        ("From".to_owned(), "1 2".to_owned()),
    ];
    let message = "http://127.0.0.1:8080/answer?x=1.From1 2Tosip:a@b.00000000000000000042";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"token").unwrap();
    mac.update(message.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        signature_v3(
            "token",
            "POST",
            "http://127.0.0.1:8080/answer?x=1",
            &p,
            "00000000000000000042"
        ),
        expected
    );
}

#[test]
fn verify_multiple_and_wrong() {
    let p = params();
    let good = "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=";
    let other = signature_v3("another-token", "POST", URL_QUERY, &p, NONCE);
    assert!(verify_v3(
        TOKEN,
        "POST",
        URL_QUERY,
        &p,
        NONCE,
        &format!("{other},{good}")
    ));
    assert!(verify_v3(
        TOKEN,
        "POST",
        URL_QUERY,
        &p,
        NONCE,
        &format!("{good}, {other}")
    ));
    assert!(!verify_v3(TOKEN, "POST", URL_QUERY, &p, NONCE, &other));
    assert!(!verify_v3(
        TOKEN,
        "POST",
        URL_QUERY,
        &p,
        NONCE,
        &format!("{other},not base64!,")
    ));
    assert!(!verify_v3(TOKEN, "POST", URL_QUERY, &p, NONCE, ""));
    // Right signature, wrong inputs.
    assert!(!verify_v3(
        TOKEN,
        "POST",
        URL_QUERY,
        &p,
        "31627761595286130199",
        good
    ));
    assert!(!verify_v3(TOKEN, "GET", URL_QUERY, &p, NONCE, good));
    assert!(!verify_v3("wrong", "POST", URL_QUERY, &p, NONCE, good));
    let mut tampered = p.clone();
    tampered[1].1 = "19792014279".to_owned();
    assert!(!verify_v3(TOKEN, "POST", URL_QUERY, &tampered, NONCE, good));
}
