//! Request fields: one declaration per field of each endpoint, used both
//! to validate requests and to write the OpenAPI document, so the document
//! says what the server really accepts.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::api::ApiError;
use sipauth_model::snapshot::AuthType;

/// What a field may hold.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// 3-64 of `[A-Za-z0-9._-]`.
    Username,
    /// 8-128 characters with an upper-case letter, a lower-case letter and
    /// a digit.
    Password,
    /// Free text up to `max` characters; `min` 1 when it must not be empty.
    Text { min: usize, max: usize },
    /// A literal IPv4 or IPv6 address (no hostnames).
    Ip,
    /// An integer in `min..=max` (JSON number or decimal string).
    Int { min: i64, max: i64 },
    /// One of the listed strings.
    OneOf(&'static [&'static str]),
    /// An `http://` or `https://` URL.
    Url,
    /// An id created by this API (uuid or numeric id), or empty to clear.
    Id,
    /// A SIP URI (`sip:`/`sips:`) or a phone number (digits, optional `+`).
    Destination,
    /// `key=value,key2=value2` SIP headers.
    SipHeaders,
    /// A comma-separated list of digest algorithms, each of `options` at
    /// most once, in the order to offer them; empty for the default.
    ListOf(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub doc: &'static str,
}

pub const fn field(name: &'static str, kind: Kind, required: bool, doc: &'static str) -> Field {
    Field {
        name,
        kind,
        required,
        doc,
    }
}

pub const HTTP_METHODS: &[&str] = &["GET", "POST"];
pub const AUTH_TYPES: &[&str] = &["", "ip_acl", "credential", "ip_acl_and_credential"];

/// The validated fields of one request, by name.
#[derive(Debug, Default)]
pub struct Valid(Map<String, Value>);

impl Valid {
    #[must_use]
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    #[must_use]
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Checks `body` against `fields`. Fields the endpoint does not declare are
/// ignored, as the API has always done; a declared field that is present
/// must be valid, and a required one must be present.
pub fn validate(body: &Map<String, Value>, fields: &[Field]) -> Result<Valid, ApiError> {
    let mut out = Map::new();
    for f in fields {
        match body.get(f.name) {
            None | Some(Value::Null) => {
                if f.required {
                    return Err(ApiError::field(f.name, "is required"));
                }
            }
            Some(v) => {
                let v = check(f, v)?;
                out.insert(f.name.to_owned(), v);
            }
        }
    }
    Ok(Valid(out))
}

fn as_text<'v>(f: &Field, v: &'v Value) -> Result<&'v str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::field(f.name, "must be a string"))
}

fn check(f: &Field, v: &Value) -> Result<Value, ApiError> {
    let err = |rule: &str| ApiError::field(f.name, rule);
    match f.kind {
        Kind::Username => {
            let s = as_text(f, v)?;
            if !(3..=64).contains(&s.len()) {
                return Err(err("must be 3 to 64 characters"));
            }
            if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(err("may only contain letters, digits, '.', '_' and '-'"));
            }
            Ok(Value::from(s))
        }
        Kind::Password => {
            let s = as_text(f, v)?;
            let n = s.chars().count();
            if !(8..=128).contains(&n) {
                return Err(err("must be 8 to 128 characters"));
            }
            if !s.chars().any(|c| c.is_ascii_uppercase())
                || !s.chars().any(|c| c.is_ascii_lowercase())
                || !s.chars().any(|c| c.is_ascii_digit())
            {
                return Err(err(
                    "must contain an upper-case letter, a lower-case letter and a digit",
                ));
            }
            if s.chars().any(char::is_control) {
                return Err(err("must not contain control characters"));
            }
            Ok(Value::from(s))
        }
        Kind::Text { min, max } => {
            let s = as_text(f, v)?;
            let n = s.chars().count();
            if n < min {
                return Err(err("must not be empty"));
            }
            if n > max {
                return Err(err(&format!("must be at most {max} characters")));
            }
            if s.chars().any(|c| c.is_control() && c != '\t') {
                return Err(err("must not contain control characters"));
            }
            Ok(Value::from(s))
        }
        Kind::Ip => {
            let s = as_text(f, v)?;
            let ip: IpAddr = s.trim().parse().map_err(|_| {
                err("must be a literal IPv4 or IPv6 address (hostnames are not accepted)")
            })?;
            Ok(Value::from(ip.to_string()))
        }
        Kind::Int { min, max } => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| err("must be an integer"))?;
            if !(min..=max).contains(&n) {
                return Err(err(&format!("must be between {min} and {max}")));
            }
            Ok(Value::from(n))
        }
        Kind::OneOf(options) => {
            let s = as_text(f, v)?;
            if !options.contains(&s) {
                let list: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
                return Err(err(&format!("must be one of {}", list.join(", "))));
            }
            Ok(Value::from(s))
        }
        Kind::Url => {
            let s = as_text(f, v)?;
            let rest = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .ok_or_else(|| err("must be an http:// or https:// URL"))?;
            if rest.is_empty()
                || rest.starts_with('/')
                || s.len() > 2048
                || s.chars().any(char::is_whitespace)
            {
                return Err(err("must be an http:// or https:// URL with a host"));
            }
            Ok(Value::from(s))
        }
        Kind::Id => {
            let s = as_text(f, v)?;
            if s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(err("is not a valid id"));
            }
            Ok(Value::from(s))
        }
        Kind::Destination => {
            let s = as_text(f, v)?.trim();
            if is_sip_uri(s) {
                sipauth_sip::parse_uri(s).map_err(|_| err("is not a valid SIP URI"))?;
            } else {
                let digits = s.strip_prefix('+').unwrap_or(s);
                if digits.is_empty()
                    || digits.len() > 20
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(err("must be a phone number or a sip: URI"));
                }
            }
            Ok(Value::from(s))
        }
        Kind::ListOf(options) => {
            let s = as_text(f, v)?;
            let mut seen: Vec<&str> = Vec::new();
            for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let Some(&known) = options.iter().find(|o| o.eq_ignore_ascii_case(item)) else {
                    let list: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
                    return Err(err(&format!(
                        "must be a comma-separated list of {}",
                        list.join(", ")
                    )));
                };
                if seen.contains(&known) {
                    return Err(err(&format!("names {known} twice")));
                }
                seen.push(known);
            }
            Ok(Value::from(seen.join(",")))
        }
        Kind::SipHeaders => {
            let s = as_text(f, v)?;
            for pair in s.split(',').filter(|p| !p.is_empty()) {
                let (k, val) = pair
                    .split_once('=')
                    .ok_or_else(|| err("must be key=value pairs separated by commas"))?;
                if k.is_empty()
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(err(
                        "header names may only contain letters, digits, '-' and '_'",
                    ));
                }
                if val.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
                    return Err(err("values must not contain CR, LF or NUL"));
                }
            }
            Ok(Value::from(s))
        }
    }
}

#[must_use]
pub fn is_sip_uri(s: &str) -> bool {
    let l = s.get(..5).unwrap_or("").to_ascii_lowercase();
    l.starts_with("sip:") || l == "sips:"
}

/// `sip_auth_type` from a validated request.
#[must_use]
pub fn auth_type(v: &Valid) -> Option<AuthType> {
    v.str("sip_auth_type").and_then(AuthType::parse)
}

/// The JSON Schema of a field, for the OpenAPI document.
#[must_use]
pub fn schema(f: &Field) -> Value {
    let mut s = match f.kind {
        Kind::Username => {
            json!({"type": "string", "minLength": 3, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]+$"})
        }
        Kind::Password => {
            json!({"type": "string", "minLength": 8, "maxLength": 128, "format": "password",
            "description": "at least one upper-case letter, one lower-case letter and one digit"})
        }
        Kind::Text { min, max } => json!({"type": "string", "minLength": min, "maxLength": max}),
        Kind::Ip => json!({"type": "string", "oneOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
        Kind::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::OneOf(options) => json!({"type": "string", "enum": options}),
        Kind::Url => json!({"type": "string", "format": "uri", "pattern": "^https?://"}),
        Kind::Id => json!({"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9-]*$"}),
        Kind::Destination => json!({"type": "string", "pattern": "^(sips?:.+|\\+?[0-9]{1,20})$"}),
        Kind::ListOf(options) => {
            let one = options.join("|");
            json!({"type": "string", "pattern": format!("^(({one})(,({one}))*)?$")})
        }
        Kind::SipHeaders => {
            json!({"type": "string", "pattern": "^([A-Za-z0-9_-]+=[^,\\r\\n\\u0000]*)?(,[A-Za-z0-9_-]+=[^,\\r\\n\\u0000]*)*$"})
        }
    };
    if let Some(o) = s.as_object_mut()
        && !f.doc.is_empty()
    {
        let doc = match o.get("description").and_then(Value::as_str) {
            Some(d) => format!("{}; {d}", f.doc),
            None => f.doc.to_owned(),
        };
        o.insert("description".into(), Value::from(doc));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: Kind, v: Value) -> Result<Value, String> {
        let f = field("x", kind, true, "");
        let mut m = Map::new();
        m.insert("x".into(), v);
        validate(&m, &[f])
            .map(|ok| ok.0["x"].clone())
            .map_err(|e| e.message)
    }

    #[test]
    fn usernames() {
        assert!(one(Kind::Username, json!("pbx-user.1_a")).is_ok());
        assert!(
            one(Kind::Username, json!("ab"))
                .unwrap_err()
                .contains("3 to 64")
        );
        assert!(one(Kind::Username, json!("a".repeat(65))).is_err());
        assert!(
            one(Kind::Username, json!("bad user"))
                .unwrap_err()
                .contains("may only contain")
        );
        assert!(
            one(Kind::Username, json!(12345))
                .unwrap_err()
                .contains("string")
        );
    }

    #[test]
    fn passwords() {
        assert!(one(Kind::Password, json!("Abcdefg1")).is_ok());
        assert!(
            one(Kind::Password, json!("Abcdef1"))
                .unwrap_err()
                .contains("8 to 128")
        );
        assert!(
            one(Kind::Password, json!("abcdefg1"))
                .unwrap_err()
                .contains("upper-case")
        );
        assert!(one(Kind::Password, json!("ABCDEFG1")).is_err());
        assert!(one(Kind::Password, json!("Abcdefgh")).is_err());
        assert!(one(Kind::Password, json!(format!("A1{}", "a".repeat(127)))).is_err());
    }

    #[test]
    fn ips_and_ints() {
        assert_eq!(
            one(Kind::Ip, json!("198.51.100.5")).unwrap(),
            json!("198.51.100.5")
        );
        assert_eq!(
            one(Kind::Ip, json!("2001:DB8::1")).unwrap(),
            json!("2001:db8::1")
        );
        assert!(
            one(Kind::Ip, json!("pbx.example.com"))
                .unwrap_err()
                .contains("hostnames")
        );
        assert!(one(Kind::Ip, json!("198.51.100.5/24")).is_err());
        let k = Kind::Int { min: 0, max: 32 };
        assert_eq!(one(k, json!("24")).unwrap(), json!(24));
        assert!(one(k, json!(33)).unwrap_err().contains("between 0 and 32"));
        assert!(one(k, json!("x")).unwrap_err().contains("integer"));
    }

    #[test]
    fn text_urls_destinations_headers() {
        let t = Kind::Text { min: 1, max: 5 };
        assert!(one(t, json!("")).unwrap_err().contains("empty"));
        assert!(one(t, json!("abcdef")).unwrap_err().contains("at most 5"));
        assert!(one(Kind::Url, json!("https://198.51.100.1/answer")).is_ok());
        assert!(one(Kind::Url, json!("ftp://x")).is_err());
        assert!(one(Kind::Destination, json!("sip:alice@198.51.100.1")).is_ok());
        assert!(one(Kind::Destination, json!("+14155551234")).is_ok());
        assert!(one(Kind::Destination, json!("alice")).is_err());
        assert!(one(Kind::SipHeaders, json!("a=1,b-c=2")).is_ok());
        assert!(one(Kind::SipHeaders, json!("a=1\r\nX: y")).is_err());
        assert!(one(Kind::SipHeaders, json!("noequals")).is_err());
    }

    #[test]
    fn required_and_ignored() {
        let fields = [
            field("a", Kind::Id, true, ""),
            field("b", Kind::Id, false, ""),
        ];
        let mut m = Map::new();
        assert!(validate(&m, &fields).unwrap_err().message.starts_with("a:"));
        m.insert("a".into(), json!("x1"));
        m.insert("zzz".into(), json!({"anything": 1}));
        let v = validate(&m, &fields).unwrap();
        assert_eq!(v.str("a"), Some("x1"));
        assert!(!v.has("b"));
    }
}
