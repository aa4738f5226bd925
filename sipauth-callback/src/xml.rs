//! The Plivo XML an `answer_url` returns.
//!
//! Supported: `<Response>` holding `<Hangup>`, `<Wait>`, `<Dial>` (with
//! `<User>` and `<Number>` targets) and `<Speak>`. `<Speak>` is accepted so
//! that ordinary Plivo documents parse; the edge does not carry media and
//! treats it as a no-op. Any other element is an error, as is text outside
//! the elements that take text. Attributes the edge does not use are ignored.
//! Comments and processing instructions are ignored; a DTD is rejected.

use std::fmt;

use crate::headers::parse_sip_headers;

/// Why an `answer_url` document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML (or it carries a DTD).
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// The root element is not `<Response>`; holds the root's name.
    #[error("root element is <{0}>, not <Response>")]
    NotResponse(String),
    /// An element the edge does not implement; holds its name.
    #[error("unsupported element <{0}>")]
    Unsupported(String),
    /// A known attribute with a value that does not parse.
    #[error("<{element}> attribute {attribute}={value:?} is invalid")]
    InvalidAttribute {
        element: String,
        attribute: String,
        value: String,
    },
    /// A `<User>` that is not a `sip:`/`sips:` URI, a `<Number>` that is not a
    /// number, or a `<Dial>` without targets.
    #[error("invalid dial target: {0}")]
    InvalidTarget(String),
    /// A `sipHeaders` attribute that does not parse (see
    /// [`parse_sip_headers`](crate::parse_sip_headers)).
    #[error("invalid sipHeaders: {0}")]
    InvalidSipHeader(String),
    /// Non-whitespace text inside an element that holds only elements.
    #[error("unexpected text inside <{0}>")]
    UnexpectedText(String),
}

/// One verb of the document, in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `<Hangup reason="rejected|busy|...">`.
    Hangup { reason: Option<String> },
    /// `<Wait length="N">`, `length` defaulting to 1 second.
    Wait { length_secs: u32 },
    /// `<Dial>`.
    Dial(Dial),
    /// `<Speak>`: a no-op for the edge, kept so the caller can log it.
    Speak { text: String },
}

/// `<Dial timeout=".." timeLimit=".." callerId=".." action=".." method=".."
/// redirect="..">`
/// and its targets, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dial {
    pub timeout_secs: Option<u32>,
    /// `timeLimit`: the longest the bridged call may last, in seconds.
    pub time_limit_secs: Option<u32>,
    pub caller_id: Option<String>,
    /// Told how the Dial ended; with `redirect` its XML replaces what
    /// follows the Dial.
    pub action_url: Option<String>,
    /// `GET` or `POST` (the default) for `action_url`.
    pub action_method: Option<String>,
    /// `redirect="false"`: the action URL is only told, and the XML goes on
    /// after the Dial.
    pub redirect: bool,
    pub targets: Vec<DialTarget>,
}

/// A `<User>` or `<Number>` inside `<Dial>`.
#[derive(Clone, PartialEq)]
pub enum DialTarget {
    /// `<User sipAuthUsername=".." sipAuthPassword=".." sipHeaders="..">sip:..</User>`.
    User {
        uri: String,
        sip_auth_username: Option<String>,
        sip_auth_password: Option<String>,
        sip_headers: Vec<(String, String)>,
    },
    /// `<Number sipHeaders="..">15551234567</Number>`.
    Number {
        number: String,
        sip_headers: Vec<(String, String)>,
    },
}

impl fmt::Debug for DialTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialTarget::User {
                uri,
                sip_auth_username,
                sip_auth_password,
                sip_headers,
            } => f
                .debug_struct("User")
                .field("uri", uri)
                .field("sip_auth_username", sip_auth_username)
                .field(
                    "sip_auth_password",
                    &sip_auth_password.as_ref().map(|_| "<redacted>"),
                )
                .field("sip_headers", sip_headers)
                .finish(),
            DialTarget::Number {
                number,
                sip_headers,
            } => f
                .debug_struct("Number")
                .field("number", number)
                .field("sip_headers", sip_headers)
                .finish(),
        }
    }
}

/// Parses the document an `answer_url` returned into its actions.
pub fn parse_response_xml(xml: &str) -> Result<Vec<Action>, XmlError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| XmlError::Malformed(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(XmlError::NotResponse(root.tag_name().name().to_owned()));
    }
    element_children(root)?
        .into_iter()
        .map(|verb| match verb.tag_name().name() {
            "Hangup" => parse_hangup(verb),
            "Wait" => parse_wait(verb),
            "Dial" => parse_dial(verb).map(Action::Dial),
            "Speak" => Ok(Action::Speak {
                text: text_only(verb)?.trim().to_owned(),
            }),
            other => Err(XmlError::Unsupported(other.to_owned())),
        })
        .collect()
}

fn parse_hangup(node: roxmltree::Node<'_, '_>) -> Result<Action, XmlError> {
    no_children(node)?;
    Ok(Action::Hangup {
        reason: attr(node, "reason"),
    })
}

fn parse_wait(node: roxmltree::Node<'_, '_>) -> Result<Action, XmlError> {
    no_children(node)?;
    Ok(Action::Wait {
        length_secs: u32_attr(node, "length")?.unwrap_or(1),
    })
}

fn parse_dial(node: roxmltree::Node<'_, '_>) -> Result<Dial, XmlError> {
    let targets = element_children(node)?
        .into_iter()
        .map(|target| match target.tag_name().name() {
            "User" => parse_user(target),
            "Number" => parse_number(target),
            other => Err(XmlError::Unsupported(other.to_owned())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(XmlError::InvalidTarget(
            "<Dial> has no <User> or <Number>".to_owned(),
        ));
    }
    Ok(Dial {
        timeout_secs: u32_attr(node, "timeout")?,
        time_limit_secs: u32_attr(node, "timeLimit")?.filter(|t| *t > 0),
        caller_id: attr(node, "callerId"),
        action_url: attr(node, "action").filter(|u| !u.trim().is_empty()),
        action_method: attr(node, "method"),
        redirect: bool_attr(node, "redirect")?.unwrap_or(true),
        targets,
    })
}

fn parse_user(node: roxmltree::Node<'_, '_>) -> Result<DialTarget, XmlError> {
    let uri = text_only(node)?.trim().to_owned();
    if !is_sip_uri(&uri) {
        return Err(XmlError::InvalidTarget(format!(
            "<User> {uri:?} is not a sip: or sips: URI"
        )));
    }
    Ok(DialTarget::User {
        uri,
        sip_auth_username: attr(node, "sipAuthUsername"),
        sip_auth_password: attr(node, "sipAuthPassword"),
        sip_headers: sip_headers_attr(node)?,
    })
}

fn parse_number(node: roxmltree::Node<'_, '_>) -> Result<DialTarget, XmlError> {
    let number = text_only(node)?.trim().to_owned();
    let digits = number.strip_prefix('+').unwrap_or(&number);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XmlError::InvalidTarget(format!(
            "<Number> {number:?} is not a phone number"
        )));
    }
    Ok(DialTarget::Number {
        number,
        sip_headers: sip_headers_attr(node)?,
    })
}

/// `sip:` or `sips:` (scheme case-insensitive) followed by something, with no
/// whitespace, control characters or `<>"`, which could break out of the
/// header the URI is written into.
fn is_sip_uri(s: &str) -> bool {
    let rest = match s.split_once(':') {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") =>
        {
            rest
        }
        _ => return false,
    };
    !rest.is_empty()
        && !rest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

fn sip_headers_attr(node: roxmltree::Node<'_, '_>) -> Result<Vec<(String, String)>, XmlError> {
    node.attribute("sipHeaders")
        .map_or_else(|| Ok(Vec::new()), parse_sip_headers)
}

fn attr(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.attribute(name).map(str::to_owned)
}

/// `true` / `false` (any case).
fn bool_attr(node: roxmltree::Node<'_, '_>, name: &str) -> Result<Option<bool>, XmlError> {
    node.attribute(name)
        .map(|v| match v.trim() {
            t if t.eq_ignore_ascii_case("true") => Ok(true),
            f if f.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(XmlError::InvalidAttribute {
                element: node.tag_name().name().to_owned(),
                attribute: name.to_owned(),
                value: v.to_owned(),
            }),
        })
        .transpose()
}

fn u32_attr(node: roxmltree::Node<'_, '_>, name: &str) -> Result<Option<u32>, XmlError> {
    node.attribute(name)
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| XmlError::InvalidAttribute {
                    element: node.tag_name().name().to_owned(),
                    attribute: name.to_owned(),
                    value: v.to_owned(),
                })
        })
        .transpose()
}

/// The element children of `node`; whitespace text, comments and processing
/// instructions are skipped, other text is an error.
fn element_children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
) -> Result<Vec<roxmltree::Node<'a, 'i>>, XmlError> {
    let mut out = Vec::new();
    for child in node.children() {
        if child.is_element() {
            out.push(child);
        } else if child.is_text() && !child.text().unwrap_or_default().trim().is_empty() {
            return Err(XmlError::UnexpectedText(node.tag_name().name().to_owned()));
        }
    }
    Ok(out)
}

/// An element that must be empty (whitespace and comments allowed).
fn no_children(node: roxmltree::Node<'_, '_>) -> Result<(), XmlError> {
    match element_children(node)?.first() {
        Some(child) => Err(XmlError::Unsupported(child.tag_name().name().to_owned())),
        None => Ok(()),
    }
}

/// The text of an element that holds only text (and comments).
fn text_only(node: roxmltree::Node<'_, '_>) -> Result<String, XmlError> {
    let mut text = String::new();
    for child in node.children() {
        if child.is_element() {
            return Err(XmlError::Unsupported(child.tag_name().name().to_owned()));
        }
        if let Some(t) = child.text().filter(|_| child.is_text()) {
            text.push_str(t);
        }
    }
    Ok(text)
}
