//! Inputs that broke a property checked by the fuzz targets of `fuzz/`
//! (`cargo xtask fuzz`), each kept as a test of what the crate does now.

use sipauth_sip::{ParseError, parse_challenge, parse_credentials};

/// A bare (unquoted) Digest value holding `<` was accepted as the last
/// parameter but, anywhere else, opened an angle bracket that swallowed the
/// rest of the list: the same credentials parsed or failed depending on
/// parameter order (`digest_header`: rendered back in another order, they
/// no longer parsed).
/// A bare value may not hold `<` anywhere now.
#[test]
fn bare_value_with_angle_bracket_is_refused_in_any_position() {
    let last = "Digest algorithm=MD5, username=u, realm=r, nonce=n, uri=u, response=<x\\";
    let middle = "Digest username=u, realm=r, nonce=n, uri=u, response=<x\\, algorithm=MD5";
    let bad = Some(ParseError::InvalidParam {
        name: "-",
        reason: "invalid token value",
    });
    assert_eq!(parse_credentials(last).err(), bad);
    assert_eq!(parse_credentials(middle).err(), bad);
    assert_eq!(parse_challenge("Digest nonce=n, realm=<r").err(), bad);
    assert_eq!(parse_challenge("Digest realm=<r, nonce=n").err(), bad);

    // Quoted, `<` is plain text and order does not matter.
    let quoted = parse_credentials(
        "Digest response=\"<x\\\\\", algorithm=MD5, username=u, realm=r, nonce=n, uri=\"<sip:u>\"",
    )
    .unwrap();
    assert_eq!(quoted.response, "<x\\\\");
    assert_eq!(quoted.uri, "<sip:u>");
    assert_eq!(quoted.algorithm, Some("MD5"));
    // Bare values that are not tokens but hold no `<` stay accepted.
    let lenient =
        parse_credentials("Digest username=u, realm=r, nonce=n, uri=sip:u@x;lr, response=a>b\\")
            .unwrap();
    assert_eq!(lenient.uri, "sip:u@x;lr");
    assert_eq!(lenient.response, "a>b\\");
}
