//! Admission: what a request is owed, as a pure function of what is known
//! about it. One place for the README's table of what a caller sees, shared
//! by INVITE and REGISTER:
//!
//! | facts | decision |
//! |---|---|
//! | source locked out | 403, not counted again |
//! | no such application | 404 |
//! | ACL application, source outside it | 403, counted |
//! | credential application, no credentials for our realm | 407 |
//! | right response on an expired nonce | 407 `stale=true`, not counted |
//! | a nonce the edges did not make | 407, not counted |
//! | wrong user or response, replayed nonce count | 403, counted |
//! | malformed credentials | 400 |
//! | both: the ACL first, then the digest | |
//! | no auth: From user not a live registered endpoint | 486 |
//! | otherwise | let in |
//!
//! The facts that cost something (the digest check, which also remembers
//! the nonce count; the registrar lookup) are asked through closures, only
//! when the table gets to them.
#![forbid(unsafe_code)]

use sipauth_digest::Verdict;

use sipauth_model::Cause;
use sipauth_model::snapshot::{Application, AuthType};

/// What the digest check made of a request's credentials.
#[derive(Debug)]
pub enum Digest {
    /// No credentials for our realm: the request is challenged.
    Absent,
    /// The verdict, and the username the credentials named.
    Checked(Verdict, String),
}

/// The answer a request is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The source is locked out: 403, not counted again.
    LockedOut,
    /// No application of that name: 404.
    NotFound,
    /// 403, counted towards the source's lockout.
    Denied,
    /// 407 (INVITE) or 401 (REGISTER) with fresh nonces.
    Challenge { stale: bool },
    /// 400 with this reason.
    BadRequest(&'static str),
    /// Non-auth application whose caller is not registered: 486.
    NotRegistered,
    /// Let in; `user` is the digest username when there was one.
    Allow {
        auth_type: AuthType,
        user: Option<String>,
    },
}

impl Decision {
    /// Whether the request counts towards the source's lockout.
    pub fn counts(&self) -> bool {
        matches!(self, Self::Denied)
    }

    /// The cause a call record of this refusal carries, if it leaves one.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            Self::LockedOut | Self::Denied => Some(Cause::InboundAuthFailed),
            Self::NotRegistered => Some(Cause::NotRegistered),
            _ => None,
        }
    }

    /// Whether the answer has no effect beyond itself, so that no
    /// transaction need be kept for it (see `transaction`).
    pub fn is_stateless(&self) -> bool {
        matches!(
            self,
            Self::NotFound | Self::Challenge { .. } | Self::BadRequest(_)
        )
    }
}

/// The digest part of the table, shared by INVITE and REGISTER: the
/// username when the credentials are good, else the decision.
fn digest_decision(d: Digest) -> Result<String, Decision> {
    match d {
        Digest::Absent => Err(Decision::Challenge { stale: false }),
        Digest::Checked(v, user) => match v {
            Verdict::Ok => Ok(user),
            Verdict::Stale => Err(Decision::Challenge { stale: true }),
            Verdict::InvalidNonce => Err(Decision::Challenge { stale: false }),
            Verdict::WrongResponse | Verdict::UnknownUser | Verdict::Replay => {
                Err(Decision::Denied)
            }
            Verdict::BadRequest(_) => Err(Decision::BadRequest("Bad Request (digest credentials)")),
        },
    }
}

/// An INVITE to `app` (`None`: no application of the Request-URI's name).
pub fn admit_invite(
    locked_out: bool,
    app: Option<&Application>,
    in_acl: impl FnOnce(&Application) -> bool,
    digest: impl FnOnce(&Application) -> Digest,
    registered: impl FnOnce(&Application) -> bool,
) -> Decision {
    if locked_out {
        return Decision::LockedOut;
    }
    let Some(app) = app else {
        return Decision::NotFound;
    };
    let t = app.sip_auth_type;
    if t.uses_acl() && !in_acl(app) {
        return Decision::Denied;
    }
    let mut user = None;
    if t.uses_credential() {
        match digest_decision(digest(app)) {
            Ok(u) => user = Some(u),
            Err(d) => return d,
        }
    }
    if t == AuthType::None && !registered(app) {
        return Decision::NotRegistered;
    }
    Decision::Allow { auth_type: t, user }
}

/// A REGISTER: the endpoint's digest; `Ok(username)` when it may bind.
pub fn admit_register(
    locked_out: bool,
    digest: impl FnOnce() -> Digest,
) -> Result<String, Decision> {
    if locked_out {
        return Err(Decision::LockedOut);
    }
    digest_decision(digest())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn app(t: AuthType) -> Application {
        Application {
            app_id: "1234".to_owned(),
            account: "MA1".to_owned(),
            answer_url: "http://127.0.0.1/answer".to_owned(),
            answer_method: "POST".to_owned(),
            hangup_url: None,
            hangup_method: "POST".to_owned(),
            sip_auth_type: t,
            credential_uuid: None,
            ip_acl_uuid: None,
            challenge_algorithms: Vec::new(),
        }
    }

    fn ok() -> Digest {
        Digest::Checked(Verdict::Ok, "pbx-user".to_owned())
    }

    fn checked(v: Verdict) -> Digest {
        Digest::Checked(v, "pbx-user".to_owned())
    }

    /// The decision for an INVITE with these facts, and whether the digest
    /// and the registrar were asked.
    fn invite(
        locked: bool,
        t: Option<AuthType>,
        in_acl: bool,
        d: fn() -> Digest,
        registered: bool,
    ) -> (Decision, bool, bool) {
        let app = t.map(app);
        let (asked_digest, asked_reg) = (Cell::new(false), Cell::new(false));
        let decision = admit_invite(
            locked,
            app.as_ref(),
            |_| in_acl,
            |_| {
                asked_digest.set(true);
                d()
            },
            |_| {
                asked_reg.set(true);
                registered
            },
        );
        (decision, asked_digest.get(), asked_reg.get())
    }

    const ALL: [AuthType; 4] = [
        AuthType::None,
        AuthType::IpAcl,
        AuthType::Credential,
        AuthType::IpAclAndCredential,
    ];

    #[test]
    fn a_locked_out_source_gets_403_uncounted_whatever_else_is_true() {
        for t in ALL.map(Some).into_iter().chain([None]) {
            let (d, digest, reg) = invite(true, t, true, ok, true);
            assert_eq!(d, Decision::LockedOut, "{t:?}");
            assert!(!d.counts() && !digest && !reg);
            assert_eq!(d.cause(), Some(Cause::InboundAuthFailed));
        }
    }

    #[test]
    fn an_unknown_application_is_404_and_keeps_no_state() {
        let (d, digest, _) = invite(false, None, true, ok, true);
        assert_eq!(d, Decision::NotFound);
        assert!(!digest && !d.counts() && d.is_stateless() && d.cause().is_none());
    }

    #[test]
    fn ip_acl_outside_is_403_counted_inside_is_let_in() {
        let (d, digest, _) = invite(false, Some(AuthType::IpAcl), false, ok, false);
        assert_eq!(d, Decision::Denied);
        assert!(d.counts() && !digest && !d.is_stateless());
        assert_eq!(d.cause(), Some(Cause::InboundAuthFailed));
        let (d, digest, reg) = invite(false, Some(AuthType::IpAcl), true, ok, false);
        assert_eq!(
            d,
            Decision::Allow {
                auth_type: AuthType::IpAcl,
                user: None
            }
        );
        assert!(!digest && !reg, "neither digest nor registration is asked");
    }

    /// The digest check's result, the decision it leads to, and whether
    /// that counts.
    type Row = (fn() -> Digest, Decision, bool);

    #[test]
    fn credential_rows() {
        let t = Some(AuthType::Credential);
        let rows: [Row; 8] = [
            (
                || Digest::Absent,
                Decision::Challenge { stale: false },
                false,
            ),
            (
                || checked(Verdict::Stale),
                Decision::Challenge { stale: true },
                false,
            ),
            (
                || checked(Verdict::InvalidNonce),
                Decision::Challenge { stale: false },
                false,
            ),
            (|| checked(Verdict::WrongResponse), Decision::Denied, true),
            (|| checked(Verdict::UnknownUser), Decision::Denied, true),
            (|| checked(Verdict::Replay), Decision::Denied, true),
            (
                || checked(Verdict::BadRequest("nc")),
                Decision::BadRequest("Bad Request (digest credentials)"),
                false,
            ),
            (
                ok,
                Decision::Allow {
                    auth_type: AuthType::Credential,
                    user: Some("pbx-user".to_owned()),
                },
                false,
            ),
        ];
        for (digest, want, counts) in rows {
            // The ACL fact does not matter to a credential application.
            let (d, asked, reg) = invite(false, t, false, digest, false);
            assert_eq!(d, want);
            assert_eq!(d.counts(), counts, "{d:?}");
            assert!(asked && !reg);
            assert_eq!(
                d.is_stateless(),
                matches!(d, Decision::Challenge { .. } | Decision::BadRequest(_)),
                "{d:?}"
            );
        }
    }

    #[test]
    fn both_checks_the_acl_first_then_the_digest() {
        let t = Some(AuthType::IpAclAndCredential);
        let (d, asked, _) = invite(false, t, false, ok, false);
        assert_eq!(d, Decision::Denied);
        assert!(
            !asked,
            "no digest check (and no nonce count used) outside the ACL"
        );
        let (d, asked, _) = invite(false, t, true, || Digest::Absent, false);
        assert_eq!(d, Decision::Challenge { stale: false });
        assert!(asked);
        let (d, _, _) = invite(false, t, true, || checked(Verdict::Replay), false);
        assert!(d.counts());
        let (d, _, _) = invite(false, t, true, ok, false);
        assert_eq!(
            d,
            Decision::Allow {
                auth_type: AuthType::IpAclAndCredential,
                user: Some("pbx-user".to_owned())
            }
        );
    }

    #[test]
    fn no_auth_needs_a_registered_caller() {
        let t = Some(AuthType::None);
        let (d, digest, reg) = invite(false, t, false, ok, false);
        assert_eq!(d, Decision::NotRegistered);
        assert!(reg && !digest && !d.counts());
        assert_eq!(d.cause(), Some(Cause::NotRegistered));
        let (d, _, _) = invite(false, t, false, ok, true);
        assert_eq!(
            d,
            Decision::Allow {
                auth_type: AuthType::None,
                user: None
            }
        );
    }

    #[test]
    fn register_shares_the_digest_rows() {
        assert_eq!(admit_register(true, ok), Err(Decision::LockedOut));
        assert_eq!(admit_register(false, ok), Ok("pbx-user".to_owned()));
        assert_eq!(
            admit_register(false, || Digest::Absent),
            Err(Decision::Challenge { stale: false })
        );
        assert_eq!(
            admit_register(false, || checked(Verdict::Stale)),
            Err(Decision::Challenge { stale: true })
        );
        let denied = admit_register(false, || checked(Verdict::WrongResponse)).unwrap_err();
        assert!(denied.counts());
        assert!(matches!(
            admit_register(false, || checked(Verdict::BadRequest("x"))),
            Err(Decision::BadRequest(_))
        ));
    }
}
