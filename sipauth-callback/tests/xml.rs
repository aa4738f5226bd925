use sipauth_callback::{Action, Dial, DialTarget, XmlError, parse_response_xml};

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn hangup_with_reason_and_without() {
    let got = parse_response_xml(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Hangup reason="busy" schedule="30"/><Hangup /></Response>"#,
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            Action::Hangup {
                reason: Some("busy".into())
            },
            Action::Hangup { reason: None }
        ]
    );
}

#[test]
fn wait_default_and_length() {
    let got =
        parse_response_xml(r#"<Response><Wait/><Wait length=" 7 " beep="true"></Wait></Response>"#)
            .unwrap();
    assert_eq!(
        got,
        vec![
            Action::Wait { length_secs: 1 },
            Action::Wait { length_secs: 7 }
        ]
    );
    assert!(matches!(
        parse_response_xml(r#"<Response><Wait length="-1"/></Response>"#),
        Err(XmlError::InvalidAttribute { ref attribute, .. }) if attribute == "length"
    ));
}

#[test]
fn dial_user_and_number_with_whitespace() {
    let xml = r#"
<Response>
  <!-- route to the PBX first, then the mobile -->
  <Speak voice="WOMAN">Connecting you</Speak>
  <Dial timeout="25" timeLimit="600" callerId="+15550001111" action="https://cb.example/dial" method="GET" redirect="False"
        dialMusic="real">
    <User sipAuthUsername="pbx" sipAuthPassword="hunter2"
          sipHeaders="Tenant=acme,PH-Internal=x,Ref=42">
        sip:alice@10.0.0.5:5060
    </User>
    <Number sendDigits="wwww2410" sipHeaders="Route=mobile">
      +15551234567
    </Number>
  </Dial>
</Response>
"#;
    let got = parse_response_xml(xml).unwrap();
    assert_eq!(
        got,
        vec![
            Action::Speak {
                text: "Connecting you".into()
            },
            Action::Dial(Dial {
                timeout_secs: Some(25),
                time_limit_secs: Some(600),
                caller_id: Some("+15550001111".into()),
                action_url: Some("https://cb.example/dial".into()),
                action_method: Some("GET".into()),
                redirect: false,
                targets: vec![
                    DialTarget::User {
                        uri: "sip:alice@10.0.0.5:5060".into(),
                        sip_auth_username: Some("pbx".into()),
                        sip_auth_password: Some("hunter2".into()),
                        sip_headers: kv(&[("Tenant", "acme"), ("Ref", "42")]),
                    },
                    DialTarget::Number {
                        number: "+15551234567".into(),
                        sip_headers: kv(&[("Route", "mobile")]),
                    },
                ],
            }),
        ]
    );
}

#[test]
fn dial_minimal() {
    let got =
        parse_response_xml("<Response><Dial><User>sips:bob@example.net</User></Dial></Response>")
            .unwrap();
    assert_eq!(
        got,
        vec![Action::Dial(Dial {
            timeout_secs: None,
            time_limit_secs: None,
            caller_id: None,
            action_url: None,
            action_method: None,
            redirect: true,
            targets: vec![DialTarget::User {
                uri: "sips:bob@example.net".into(),
                sip_auth_username: None,
                sip_auth_password: None,
                sip_headers: vec![],
            }],
        })]
    );
}

#[test]
fn empty_response() {
    assert_eq!(parse_response_xml("<Response/>").unwrap(), vec![]);
    assert_eq!(
        parse_response_xml("<Response>\n  \n</Response>").unwrap(),
        vec![]
    );
}

#[test]
fn unknown_attributes_ignored() {
    let got = parse_response_xml(
        r#"<Response><Hangup reason="rejected" futureThing="1" xmlns:x="urn:x" x:y="2"/></Response>"#,
    )
    .unwrap();
    assert_eq!(
        got,
        vec![Action::Hangup {
            reason: Some("rejected".into())
        }]
    );
}

#[test]
fn unknown_elements_rejected() {
    assert_eq!(
        parse_response_xml("<Response><Record/></Response>"),
        Err(XmlError::Unsupported("Record".into()))
    );
    assert_eq!(
        parse_response_xml("<Response><Dial><Conference>c</Conference></Dial></Response>"),
        Err(XmlError::Unsupported("Conference".into()))
    );
    assert_eq!(
        parse_response_xml("<Response><Dial><User>sip:a@b<Extra/></User></Dial></Response>"),
        Err(XmlError::Unsupported("Extra".into()))
    );
    assert_eq!(
        parse_response_xml("<Response><Hangup><Now/></Hangup></Response>"),
        Err(XmlError::Unsupported("Now".into()))
    );
    // Element names are case-sensitive, as in Plivo XML.
    assert_eq!(
        parse_response_xml("<Response><hangup/></Response>"),
        Err(XmlError::Unsupported("hangup".into()))
    );
}

#[test]
fn malformed_rejected() {
    for bad in [
        "",
        "<Response>",
        "<Response><Hangup></Response>",
        "<Response><Hangup reason=busy/></Response>",
        "<Response></Response><Response/>",
        "not xml at all",
        r#"<!DOCTYPE Response [<!ENTITY x "y">]><Response/>"#,
    ] {
        assert!(
            matches!(parse_response_xml(bad), Err(XmlError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn root_must_be_response() {
    assert_eq!(
        parse_response_xml("<Dial><User>sip:a@b</User></Dial>"),
        Err(XmlError::NotResponse("Dial".into()))
    );
    assert_eq!(
        parse_response_xml("<response/>"),
        Err(XmlError::NotResponse("response".into()))
    );
}

#[test]
fn stray_text_rejected() {
    assert_eq!(
        parse_response_xml("<Response>hello<Hangup/></Response>"),
        Err(XmlError::UnexpectedText("Response".into()))
    );
    assert_eq!(
        parse_response_xml("<Response><Dial>x<Number>1</Number></Dial></Response>"),
        Err(XmlError::UnexpectedText("Dial".into()))
    );
}

#[test]
fn bad_targets_rejected() {
    for bad in [
        "<User>alice@example.com</User>",
        "<User>tel:+15551234567</User>",
        "<User>https://example.com</User>",
        "<User>sip:</User>",
        "<User>  </User>",
        "<User>sip:a@b&#13;&#10;X-Injected: 1</User>",
        "<User>sip:a b@c</User>",
        "<User>sip:a@b&gt;;x</User>",
        "<Number>555-1234</Number>",
        "<Number>+</Number>",
        "<Number/>",
    ] {
        let xml = format!("<Response><Dial>{bad}</Dial></Response>");
        assert!(
            matches!(parse_response_xml(&xml), Err(XmlError::InvalidTarget(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        parse_response_xml("<Response><Dial timeout=\"5\"/></Response>"),
        Err(XmlError::InvalidTarget(_))
    ));
    // Scheme case does not matter.
    assert!(parse_response_xml("<Response><Dial><User>SIP:a@b</User></Dial></Response>").is_ok());
}

#[test]
fn bad_sip_headers_reject_document() {
    let xml =
        r#"<Response><Dial><User sipHeaders="Ok=1,Bad Key=2">sip:a@b</User></Dial></Response>"#;
    assert!(matches!(
        parse_response_xml(xml),
        Err(XmlError::InvalidSipHeader(_))
    ));
    let xml = r#"<Response><Dial><Number sipHeaders="K=a&#10;b">123</Number></Dial></Response>"#;
    assert!(matches!(
        parse_response_xml(xml),
        Err(XmlError::InvalidSipHeader(_))
    ));
}

#[test]
fn bad_dial_timeout() {
    assert!(matches!(
        parse_response_xml(
            r#"<Response><Dial timeout="soon"><Number>1</Number></Dial></Response>"#
        ),
        Err(XmlError::InvalidAttribute { .. })
    ));
}

#[test]
fn debug_redacts_sip_auth_password() {
    let actions = parse_response_xml(
        r#"<Response><Dial><User sipAuthUsername="pbx" sipAuthPassword="hunter2">sip:a@b</User></Dial></Response>"#,
    )
    .unwrap();
    let shown = format!("{actions:?} {:#?}", actions[0]);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("pbx"), "{shown}");
}

#[test]
fn dial_redirect_must_be_true_or_false() {
    assert!(matches!(
        parse_response_xml(r#"<Response><Dial redirect="maybe"><User>sip:a@10.0.0.1</User></Dial></Response>"#),
        Err(XmlError::InvalidAttribute { ref attribute, .. }) if attribute == "redirect"
    ));
}
