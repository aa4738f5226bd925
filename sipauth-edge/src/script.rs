//! The answer XML of a call, followed: one interpreter for every party
//! that runs it, the inbound caller not yet answered ([`crate::call`]) and
//! the answered leg of a Make Call ([`crate::outbound::make_call`]).
//!
//! What each element does is the party's business ([`Party`]); what comes
//! next is the script's:
//!
//! - `<Hangup reason>` ends the call as the party hangs up.
//! - `<Wait length>` waits (at most an hour) unless the call ends meanwhile.
//! - `<Speak>` is a no-op (the edge carries no media).
//! - `<Dial>` rings its targets for the party. Its action URL is told how
//!   it ended (DialStatus, DialHangupCause, DialHangupCauseCode,
//!   DialRingStatus, DialALegUUID); unless the call is over or the Dial
//!   says `redirect="false"`, the XML the action URL returns replaces what
//!   follows the Dial. A Dial that reached nobody, followed by nothing
//!   (nothing but other Dials that reached nobody), ends the call with
//!   its own outcome.
//! - The end of the XML ends the call (`end_of_xml_instructions`).
//!
//! Before each element the call's time limit is checked, and after each
//! `<Wait>`: past it the party is hung up (`normal_hangup`).
#![forbid(unsafe_code)]

use std::time::Duration;

use sipauth_callback::{Action, Callback, Client, Dial, Method, Params};

use crate::outcome::{Dialed, Outcome};

/// The callback method an XML or application setting names: `GET`, or
/// `POST` for anything else.
#[must_use]
pub(crate) fn method_of(m: &str) -> Method {
    if m.eq_ignore_ascii_case("GET") {
        Method::Get
    } else {
        Method::Post
    }
}

/// `<Wait length>` waits this long at most.
const MAX_WAIT: Duration = Duration::from_hours(1);

/// A party the answer XML drives.
pub(crate) trait Party {
    /// CallUUID, and DialALegUUID of a Dial's action URL.
    fn call_uuid(&self) -> &str;
    /// The account's auth token, which signs every callback.
    fn auth_token(&self) -> &str;
    /// The parameters of the call's callbacks, CallStatus `status`.
    fn params(&self, status: &'static str) -> Params;
    /// The answer_url request.
    fn answer_url(&self) -> Callback<'_>;
    /// Whether the call's time limit has run out.
    fn out_of_time(&self) -> bool;
    /// `<Hangup reason>`: ends the call; how it ended.
    async fn hang_up(&mut self, reason: Option<&str>) -> Outcome;
    /// Ends the call with `outcome` (the XML ran out or failed, or the
    /// time limit).
    async fn end(&mut self, outcome: &Outcome);
    /// `<Wait>` for `length`: `None` once waited, or how the call ended
    /// meanwhile (the party already ended).
    async fn wait(&mut self, length: Duration) -> Option<Outcome>;
    /// `<Dial>`: how it ended, and whether a target rang or answered.
    async fn dial(&mut self, dial: &Dial) -> (Dialed, bool);
    /// Whether the party left while a Dial's action URL answered.
    fn left(&mut self) -> bool;
}

/// Fetches the party's answer_url and follows its XML until the call
/// ends; how it ended.
pub(crate) async fn run(client: &Client, party: &mut impl Party) -> Outcome {
    let fetched = {
        let cb = party.answer_url();
        fetch(client, &cb, party.call_uuid(), "answer_url").await
    };
    match fetched {
        Ok(actions) => follow(client, party, actions).await,
        Err(o) => {
            party.end(&o).await;
            o
        }
    }
}

/// Follows `actions` until the call ends; how it ended.
async fn follow(client: &Client, party: &mut impl Party, actions: Vec<Action>) -> Outcome {
    // The outcome of a `<Dial>` that reached nobody, while nothing else
    // has happened since.
    let mut unreached: Option<Outcome> = None;
    let mut actions = actions.into_iter();
    while let Some(action) = actions.next() {
        if party.out_of_time() {
            return ended(party, Outcome::HUNG_UP).await;
        }
        match action {
            Action::Hangup { reason } => return party.hang_up(reason.as_deref()).await,
            Action::Wait { length_secs } => {
                unreached = None;
                let length = Duration::from_secs(u64::from(length_secs)).min(MAX_WAIT);
                if let Some(o) = party.wait(length).await {
                    return o;
                }
                if party.out_of_time() {
                    return ended(party, Outcome::HUNG_UP).await;
                }
            }
            Action::Speak { .. } => unreached = None,
            Action::Dial(dial) => {
                // A Dial's state (its legs, their transactions and
                // lookups) is most of a call's: boxed, so that a call that
                // never dials starts in a small task.
                let (dialed, alerted) = Box::pin(party.dial(&dial)).await;
                // A call that is over can only tell the action URL.
                let (told, redirect) = match dialed {
                    Dialed::Over(o) => (o, false),
                    Dialed::Connected => (Outcome::HUNG_UP, true),
                    Dialed::Unreached(o) => (o, true),
                };
                let next = dial_action(client, party, &dial, &told, alerted, redirect).await;
                match dialed {
                    Dialed::Over(o) => return o,
                    Dialed::Connected => unreached = None,
                    Dialed::Unreached(o) => unreached = Some(o),
                }
                match next {
                    Some(Ok(new)) => actions = new.into_iter(),
                    Some(Err(o)) => return ended(party, o).await,
                    None => {}
                }
                if party.left() {
                    return ended(party, Outcome::CANCELLED).await;
                }
            }
        }
    }
    ended(party, unreached.unwrap_or(Outcome::END_OF_XML)).await
}

/// Ends the call with `outcome`.
async fn ended(party: &mut impl Party, outcome: Outcome) -> Outcome {
    party.end(&outcome).await;
    outcome
}

/// Tells the `<Dial action>` URL how the Dial ended (signed with the
/// account's token, the call's parameters with CallStatus in-progress and
/// DialStatus, DialHangupCause, DialHangupCauseCode, DialRingStatus,
/// DialALegUUID). With `redirect` (when the call can still go on) and the
/// Dial's own, the XML it returns is what the call follows next:
/// `Some(Ok(actions))`, or `Some(Err(outcome))` when the fetch or the XML
/// failed. `None`: no action URL, or only told.
async fn dial_action(
    client: &Client,
    party: &impl Party,
    dial: &Dial,
    end: &Outcome,
    alerted: bool,
    redirect: bool,
) -> Option<Result<Vec<Action>, Outcome>> {
    let url = dial.action_url.as_deref()?;
    let call_uuid = party.call_uuid();
    let mut params = party.params("in-progress");
    params.extend([
        ("DialStatus", end.status.into()),
        ("DialHangupCause", end.cause.name().into()),
        ("DialHangupCauseCode", end.cause.code().to_string().into()),
        (
            "DialRingStatus",
            if alerted { "true" } else { "false" }.into(),
        ),
        ("DialALegUUID", call_uuid.to_owned().into()),
    ]);
    let cb = Callback {
        url,
        method: method_of(dial.action_method.as_deref().unwrap_or("POST")),
        params,
        auth_token: party.auth_token(),
    };
    if !(redirect && dial.redirect) {
        if let Err(e) = client.notify(&cb).await {
            tracing::info!(call = %call_uuid, error = %e, "Dial action URL failed");
        }
        return None;
    }
    Some(fetch(client, &cb, call_uuid, "Dial action URL").await)
}

/// Fetches `cb` (the answer_url or a Dial action URL, `what`) and parses
/// its XML.
async fn fetch(
    client: &Client,
    cb: &Callback<'_>,
    call_uuid: &str,
    what: &str,
) -> Result<Vec<Action>, Outcome> {
    let body = client.fetch(cb).await.map_err(|e| {
        tracing::warn!(call = %call_uuid, error = %e, "{what} failed");
        Outcome::ANSWER_URL_UNREACHABLE
    })?;
    sipauth_callback::parse_response_xml(&body).map_err(|e| {
        tracing::warn!(call = %call_uuid, error = %e, "{what} returned invalid XML");
        Outcome::INVALID_XML
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use sipauth_callback::Method;
    use sipauth_model::Cause;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;

    /// A party that writes down what the script asks of it.
    struct Probe {
        answer_url: String,
        /// What the script asked, in order.
        did: Vec<String>,
        /// What each `<Dial>` returns, in turn.
        dials: VecDeque<(Dialed, bool)>,
        /// Time-limit checks passed before the limit runs out.
        checks_left: Cell<Option<u32>>,
        /// Whether the party left during a Dial's action URL.
        leaves: bool,
    }

    impl Probe {
        fn new(base: &str, dials: impl IntoIterator<Item = (Dialed, bool)>) -> Self {
            Self {
                answer_url: format!("{base}/answer"),
                did: Vec::new(),
                dials: dials.into_iter().collect(),
                checks_left: Cell::new(None),
                leaves: false,
            }
        }
    }

    impl Party for Probe {
        fn call_uuid(&self) -> &'static str {
            "call-1"
        }

        fn auth_token(&self) -> &'static str {
            "token"
        }

        fn params(&self, status: &'static str) -> Params {
            vec![("CallUUID", "call-1".into()), ("CallStatus", status.into())]
        }

        fn answer_url(&self) -> Callback<'_> {
            Callback {
                url: &self.answer_url,
                method: Method::Post,
                params: self.params("ringing"),
                auth_token: "token",
            }
        }

        fn out_of_time(&self) -> bool {
            match self.checks_left.get() {
                None => false,
                Some(0) => true,
                Some(n) => {
                    self.checks_left.set(Some(n - 1));
                    false
                }
            }
        }

        async fn hang_up(&mut self, reason: Option<&str>) -> Outcome {
            self.did.push(format!("hangup {}", reason.unwrap_or("-")));
            let o = Outcome::of_hangup(reason);
            self.end(&o).await;
            o
        }

        async fn end(&mut self, outcome: &Outcome) {
            self.did.push(format!("end {}", outcome.code));
        }

        async fn wait(&mut self, length: Duration) -> Option<Outcome> {
            self.did.push(format!("wait {}", length.as_secs()));
            None
        }

        async fn dial(&mut self, dial: &Dial) -> (Dialed, bool) {
            self.did.push(format!("dial {}", dial.targets.len()));
            self.dials.pop_front().expect("a Dial the test planned")
        }

        fn left(&mut self) -> bool {
            self.leaves
        }
    }

    /// What an HTTP server on 127.0.0.1 was asked: method, path, body.
    type Asked = Arc<Mutex<Vec<(String, String, String)>>>;

    /// Serves `pages` (path, XML, where `{base}` stands for the server's
    /// own URL) over HTTP on 127.0.0.1, 404 for any other path; its base
    /// URL and what it was asked.
    async fn serve(pages: &[(&str, &str)]) -> (String, Asked) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pages: HashMap<String, String> = pages
            .iter()
            .map(|(p, x)| ((*p).to_owned(), x.replace("{base}", &base)))
            .collect();
        let asked = Asked::default();
        let log = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut stream = BufReader::new(stream);
                let mut start = String::new();
                stream.read_line(&mut start).await.unwrap();
                let mut parts = start.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let page = pages.get(&path).cloned();
                log.lock()
                    .unwrap()
                    .push((method, path, String::from_utf8(body).unwrap()));
                let reply = match page {
                    Some(xml) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                        xml.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned()
                    }
                };
                let _ = stream.get_mut().write_all(reply.as_bytes()).await;
            }
        });
        (base, asked)
    }

    fn client() -> Client {
        Client::new(Duration::from_secs(5))
    }

    /// The paths the server was asked for, in order.
    fn paths(asked: &Asked) -> Vec<String> {
        asked.lock().unwrap().iter().map(|a| a.1.clone()).collect()
    }

    /// The body of the request for `path`.
    fn body_of(asked: &Asked, path: &str) -> String {
        asked
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.1 == path)
            .map(|a| a.2.clone())
            .expect("asked")
    }

    #[tokio::test]
    async fn hangup_ends_the_call_with_its_reasons_cause() {
        let (base, asked) = serve(&[(
            "/answer",
            r#"<Response><Hangup reason="busy"/><Wait length="5"/></Response>"#,
        )])
        .await;
        let mut party = Probe::new(&base, []);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::new(486, "busy", Cause::BusyLine));
        assert_eq!(party.did, ["hangup busy", "end 486"]);
        assert_eq!(paths(&asked), ["/answer"]);
        assert_eq!(
            body_of(&asked, "/answer"),
            "CallUUID=call-1&CallStatus=ringing"
        );
    }

    #[tokio::test]
    async fn wait_then_the_end_of_the_xml() {
        let (base, _) = serve(&[(
            "/answer",
            r#"<Response><Wait length="7200"/><Speak>hello</Speak></Response>"#,
        )])
        .await;
        let mut party = Probe::new(&base, []);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::END_OF_XML);
        assert_eq!((o.status, o.cause.code()), ("completed", 4030));
        // A Wait is an hour at most; Speak asks nothing of the party.
        assert_eq!(party.did, ["wait 3600", "end 480"]);
    }

    #[tokio::test]
    async fn a_dial_that_reached_nobody_followed_by_nothing_ends_with_its_outcome() {
        let (base, _) = serve(&[(
            "/answer",
            "<Response><Dial><User>sip:b@192.0.2.2</User></Dial></Response>",
        )])
        .await;
        let mut party = Probe::new(&base, [(Dialed::Unreached(Outcome::AUTH_FAILED), false)]);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::AUTH_FAILED);
        assert_eq!((o.cause.name(), o.cause.code()), ("sip_auth_failed", 4240));
        assert_eq!(party.did, ["dial 1", "end 403"]);
    }

    #[tokio::test]
    async fn anything_after_a_dial_that_reached_nobody_forgets_its_outcome() {
        let (base, _) = serve(&[(
            "/answer",
            "<Response><Dial><User>sip:b@192.0.2.2</User></Dial><Speak>sorry</Speak></Response>",
        )])
        .await;
        let busy = Outcome::of_status(486);
        let mut party = Probe::new(&base, [(Dialed::Unreached(busy), true)]);
        assert_eq!(run(&client(), &mut party).await, Outcome::END_OF_XML);
        assert_eq!(party.did, ["dial 1", "end 480"]);
    }

    #[tokio::test]
    async fn the_action_urls_xml_replaces_what_follows_the_dial() {
        let (base, asked) = serve(&[
            (
                "/answer",
                r#"<Response><Dial action="{base}/action"><User>sip:b@192.0.2.2</User><User>sip:c@192.0.2.3</User></Dial><Wait length="5"/></Response>"#,
            ),
            (
                "/action",
                r#"<Response><Wait length="2"/><Hangup reason="rejected"/></Response>"#,
            ),
        ])
        .await;
        let busy = Outcome::of_status(486);
        let mut party = Probe::new(&base, [(Dialed::Unreached(busy), true)]);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::new(603, "failed", Cause::Rejected));
        assert_eq!(
            party.did,
            ["dial 2", "wait 2", "hangup rejected", "end 603"]
        );
        assert_eq!(paths(&asked), ["/answer", "/action"]);
        assert_eq!(
            body_of(&asked, "/action"),
            "CallUUID=call-1&CallStatus=in-progress&DialStatus=busy&DialHangupCause=busy_line\
             &DialHangupCauseCode=4010&DialRingStatus=true&DialALegUUID=call-1"
        );
    }

    #[tokio::test]
    async fn an_action_url_without_redirect_is_told_and_the_xml_goes_on() {
        let (base, asked) = serve(&[
            (
                "/answer",
                r#"<Response><Dial action="{base}/action" method="GET" redirect="false"><Number>15551234</Number></Dial><Wait length="5"/></Response>"#,
            ),
            ("/action", "<Response><Hangup/></Response>"),
        ])
        .await;
        let mut party = Probe::new(
            &base,
            [(Dialed::Unreached(Outcome::DIAL_UNAVAILABLE), false)],
        );
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::END_OF_XML);
        assert_eq!(party.did, ["dial 1", "wait 5", "end 480"]);
        let action = asked.lock().unwrap()[1].clone();
        assert_eq!(action.0, "GET");
        assert_eq!(
            action.1,
            "/action?CallUUID=call-1&CallStatus=in-progress&DialStatus=failed\
             &DialHangupCause=dial_not_available&DialHangupCauseCode=4080\
             &DialRingStatus=false&DialALegUUID=call-1"
        );
    }

    #[tokio::test]
    async fn a_call_over_after_its_dial_only_tells_the_action_url() {
        let (base, asked) = serve(&[
            (
                "/answer",
                r#"<Response><Dial action="{base}/action"><User>sip:b@192.0.2.2</User></Dial><Wait length="5"/></Response>"#,
            ),
            ("/action", "<Response><Wait/></Response>"),
        ])
        .await;
        let mut party = Probe::new(&base, [(Dialed::Over(Outcome::HUNG_UP), true)]);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::HUNG_UP);
        // The party ended itself: it is not ended again.
        assert_eq!(party.did, ["dial 1"]);
        assert!(body_of(&asked, "/action").contains(
            "DialStatus=completed&DialHangupCause=normal_hangup&DialHangupCauseCode=4000\
                 &DialRingStatus=true"
        ));
    }

    #[tokio::test]
    async fn after_a_connected_dial_the_xml_goes_on() {
        let (base, _) = serve(&[(
            "/answer",
            "<Response><Dial><User>sip:b@192.0.2.2</User></Dial><Hangup/></Response>",
        )])
        .await;
        let mut party = Probe::new(&base, [(Dialed::Connected, true)]);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::new(480, "completed", Cause::NormalHangup));
        assert_eq!(party.did, ["dial 1", "hangup -", "end 480"]);
    }

    #[tokio::test]
    async fn a_party_that_left_during_the_action_url_is_cancelled() {
        let (base, _) = serve(&[
            (
                "/answer",
                r#"<Response><Dial action="{base}/action"><User>sip:b@192.0.2.2</User></Dial></Response>"#,
            ),
            ("/action", "<Response><Wait/></Response>"),
        ])
        .await;
        let mut party = Probe::new(&base, [(Dialed::Unreached(Outcome::of_status(480)), true)]);
        party.leaves = true;
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::CANCELLED);
        assert_eq!(party.did, ["dial 1", "end 487"]);
    }

    #[tokio::test]
    async fn failed_callbacks_end_the_call() {
        let (base, _) = serve(&[
            (
                "/answer",
                r#"<Response><Dial action="{base}/action"><User>sip:b@192.0.2.2</User></Dial></Response>"#,
            ),
            ("/action", "<Response><Dial>"),
        ])
        .await;
        let mut party = Probe::new(&base, [(Dialed::Unreached(Outcome::NETWORK_ERROR), false)]);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::INVALID_XML);
        assert_eq!(party.did, ["dial 1", "end 480"]);

        let mut party = Probe::new(&format!("{base}/nowhere"), []);
        let o = run(&client(), &mut party).await;
        assert_eq!(o, Outcome::ANSWER_URL_UNREACHABLE);
        assert_eq!((o.status, o.cause.code()), ("failed", 4060));
        assert_eq!(party.did, ["end 480"]);
    }

    #[tokio::test]
    async fn the_time_limit_is_checked_before_each_element_and_after_a_wait() {
        let (base, _) = serve(&[(
            "/answer",
            r#"<Response><Wait length="1"/><Hangup/></Response>"#,
        )])
        .await;
        let mut party = Probe::new(&base, []);
        party.checks_left.set(Some(1));
        assert_eq!(run(&client(), &mut party).await, Outcome::HUNG_UP);
        assert_eq!(party.did, ["wait 1", "end 200"]);

        let mut party = Probe::new(&base, []);
        party.checks_left.set(Some(0));
        assert_eq!(run(&client(), &mut party).await, Outcome::HUNG_UP);
        assert_eq!(party.did, ["end 200"]);
    }
}
