//! The edge's read-only view of the control plane's data, as one versioned
//! value.
//!
//! The control plane builds a [`Snapshot`] from its store after every
//! committed change; edges receive it whole, apply it in one swap, and keep
//! the last one on disk. Nothing in it is a password: credentials and
//! endpoints carry HA1 values only. Account auth tokens are here because the
//! edge signs callbacks with them.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sipauth_digest::Ha1Set;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Monotonic: every committed change of the control plane advances it.
    pub version: u64,
    pub accounts: Vec<Account>,
    pub applications: Vec<Application>,
    pub credentials: Vec<Credential>,
    pub acls: Vec<Acl>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub auth_id: String,
    /// Key of the callback signatures.
    pub auth_token: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("auth_id", &self.auth_id)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// Non-auth mode: the From user must be a registered endpoint.
    #[default]
    #[serde(rename = "")]
    None,
    IpAcl,
    Credential,
    IpAclAndCredential,
}

impl AuthType {
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" => Self::None,
            "ip_acl" => Self::IpAcl,
            "credential" => Self::Credential,
            "ip_acl_and_credential" => Self::IpAclAndCredential,
            _ => return None,
        })
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::IpAcl => "ip_acl",
            Self::Credential => "credential",
            Self::IpAclAndCredential => "ip_acl_and_credential",
        }
    }

    #[must_use]
    pub fn uses_acl(self) -> bool {
        matches!(self, Self::IpAcl | Self::IpAclAndCredential)
    }

    #[must_use]
    pub fn uses_credential(self) -> bool {
        matches!(self, Self::Credential | Self::IpAclAndCredential)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Application {
    pub app_id: String,
    pub account: String,
    pub answer_url: String,
    pub answer_method: String,
    pub hangup_url: Option<String>,
    pub hangup_method: String,
    pub sip_auth_type: AuthType,
    pub credential_uuid: Option<String>,
    pub ip_acl_uuid: Option<String>,
    /// Digest algorithms to challenge callers with, in order (`MD5`,
    /// `SHA-256`, `SHA-512-256`); empty: the edge's default.
    #[serde(default)]
    pub challenge_algorithms: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Credential {
    pub uuid: String,
    pub account: String,
    pub username: String,
    pub ha1: Ha1Set,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("uuid", &self.uuid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Acl {
    pub uuid: String,
    pub account: String,
    /// Networks as stored (host bits cleared).
    pub entries: Vec<IpNet>,
}

impl Acl {
    /// Longest-prefix match; with allow-only entries any match allows.
    #[must_use]
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub account: String,
    pub username: String,
    pub app_id: Option<String>,
    pub ha1: Ha1Set,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("endpoint_id", &self.endpoint_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A snapshot indexed for lookups on the request path.
#[derive(Debug, Default)]
pub struct Index {
    pub snapshot: Snapshot,
    apps: HashMap<String, usize>,
    accounts: HashMap<String, usize>,
    credentials: HashMap<String, usize>,
    acls: HashMap<String, usize>,
    endpoints_by_username: HashMap<String, usize>,
}

impl Index {
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        fn by<T>(items: &[T], key: impl Fn(&T) -> &str) -> HashMap<String, usize> {
            items
                .iter()
                .enumerate()
                .map(|(i, t)| (key(t).to_owned(), i))
                .collect()
        }
        Self {
            apps: by(&snapshot.applications, |a| &a.app_id),
            accounts: by(&snapshot.accounts, |a| &a.auth_id),
            credentials: by(&snapshot.credentials, |c| &c.uuid),
            acls: by(&snapshot.acls, |a| &a.uuid),
            endpoints_by_username: by(&snapshot.endpoints, |e| &e.username),
            snapshot,
        }
    }

    #[must_use]
    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    #[must_use]
    pub fn application(&self, app_id: &str) -> Option<&Application> {
        self.apps
            .get(app_id)
            .map(|&i| &self.snapshot.applications[i])
    }

    #[must_use]
    pub fn account(&self, auth_id: &str) -> Option<&Account> {
        self.accounts
            .get(auth_id)
            .map(|&i| &self.snapshot.accounts[i])
    }

    #[must_use]
    pub fn credential(&self, uuid: &str) -> Option<&Credential> {
        self.credentials
            .get(uuid)
            .map(|&i| &self.snapshot.credentials[i])
    }

    #[must_use]
    pub fn acl(&self, uuid: &str) -> Option<&Acl> {
        self.acls.get(uuid).map(|&i| &self.snapshot.acls[i])
    }

    #[must_use]
    pub fn endpoint(&self, username: &str) -> Option<&Endpoint> {
        self.endpoints_by_username
            .get(username)
            .map(|&i| &self.snapshot.endpoints[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_matches_v4_v6_and_mapped() {
        let acl = Acl {
            uuid: "a".into(),
            account: "x".into(),
            entries: vec![
                "198.51.100.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        };
        assert!(acl.allows("198.51.100.7".parse().unwrap()));
        assert!(acl.allows("::ffff:198.51.100.7".parse().unwrap()));
        assert!(!acl.allows("198.51.101.7".parse().unwrap()));
        assert!(acl.allows("2001:db8:1::1".parse().unwrap()));
        assert!(!acl.allows("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn auth_type_names_round_trip() {
        for t in [
            AuthType::None,
            AuthType::IpAcl,
            AuthType::Credential,
            AuthType::IpAclAndCredential,
        ] {
            assert_eq!(AuthType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(AuthType::parse("IP_ACL"), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let a = Account {
            auth_id: "MA1".into(),
            auth_token: "tok-secret".into(),
        };
        assert!(!format!("{a:?}").contains("tok-secret"));
        let c = Credential {
            uuid: "u".into(),
            account: "MA1".into(),
            username: "alice".into(),
            ha1: Ha1Set::new("alice", "r", "Secret123"),
        };
        assert!(!format!("{c:?}").contains(&c.ha1.md5));
    }
}
