//! Registrations of SIP endpoints (REGISTER), for the non-auth mode: an
//! INVITE to an application without `sip_auth_type` is taken only from an
//! endpoint of the application's account with a live registration.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sipauth_model::{Registration, Registrations};
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Binding {
    contact: String,
    expires: Instant,
    user_agent: String,
}

#[derive(Default)]
pub struct Registrar {
    bindings: Mutex<HashMap<String, Vec<Binding>>>,
}

impl Registrar {
    /// Adds or refreshes a binding, made by `user_agent`; `secs` 0 removes
    /// it.
    pub fn bind(&self, username: &str, contact: &str, secs: u32, user_agent: &str) {
        let now = Instant::now();
        let mut m = self.bindings.lock().expect("registrar");
        let list = m.entry(username.to_owned()).or_default();
        list.retain(|b| b.contact != contact && b.expires > now);
        if secs > 0 {
            list.push(Binding {
                contact: contact.to_owned(),
                expires: now + Duration::from_secs(u64::from(secs)),
                user_agent: user_agent.to_owned(),
            });
        }
        if list.is_empty() {
            m.remove(username);
        }
    }

    /// Removes every binding of `username` (`Contact: *`).
    pub fn clear(&self, username: &str) {
        self.bindings.lock().expect("registrar").remove(username);
    }

    /// The live bindings as (contact, seconds left).
    pub fn bindings(&self, username: &str) -> Vec<(String, u64)> {
        let now = Instant::now();
        self.bindings
            .lock()
            .expect("registrar")
            .get(username)
            .into_iter()
            .flatten()
            .filter(|b| b.expires > now)
            .map(|b| (b.contact.clone(), b.expires.duration_since(now).as_secs()))
            .collect()
    }

    /// Every live binding as (username, contact, seconds left, user agent).
    pub fn all(&self) -> Vec<(String, String, u64, String)> {
        let now = Instant::now();
        self.bindings
            .lock()
            .expect("registrar")
            .iter()
            .flat_map(|(user, list)| {
                list.iter().filter(|b| b.expires > now).map(move |b| {
                    (
                        user.clone(),
                        b.contact.clone(),
                        b.expires.duration_since(now).as_secs(),
                        b.user_agent.clone(),
                    )
                })
            })
            .collect()
    }

    pub fn is_live(&self, username: &str) -> bool {
        !self.bindings(username).is_empty()
    }

    /// Drops expired bindings; run now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut m = self.bindings.lock().expect("registrar");
        m.retain(|_, list| {
            list.retain(|b| b.expires > now);
            !list.is_empty()
        });
    }
}

/// The binding that expires last, with its end on the wall clock.
impl Registrations for Registrar {
    fn current(&self, username: &str) -> Option<Registration> {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let m = self.bindings.lock().expect("registrar");
        m.get(username)?
            .iter()
            .filter(|b| b.expires > now)
            .max_by_key(|b| b.expires)
            .map(|b| Registration {
                contact: b.contact.clone(),
                expires_unix: wall + b.expires.duration_since(now).as_secs(),
                user_agent: b.user_agent.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bindings_expire_and_refresh() {
        let r = Registrar::default();
        r.bind("alice123", "<sip:alice@192.0.2.1:5060>", 60, "");
        assert!(r.is_live("alice123"));
        tokio::time::advance(Duration::from_secs(50)).await;
        r.bind("alice123", "<sip:alice@192.0.2.1:5060>", 60, "");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(r.is_live("alice123"), "refreshed");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!r.is_live("alice123"), "expired");
        r.bind("bob", "<sip:bob@192.0.2.2>", 60, "");
        r.bind("bob", "<sip:bob@192.0.2.2>", 0, "");
        assert!(!r.is_live("bob"), "unregistered");
        r.bind("carol", "<sip:c@192.0.2.3>", 60, "");
        r.clear("carol");
        assert!(!r.is_live("carol"));
        r.sweep();
    }

    #[tokio::test(start_paused = true)]
    async fn the_current_registration_is_the_binding_that_expires_last() {
        let r = Registrar::default();
        assert_eq!(r.current("dan"), None);
        r.bind("dan", "sip:dan@192.0.2.4:5060", 120, "Phone 1.0");
        r.bind("dan", "sip:dan@192.0.2.4:5062", 600, "Phone 2.0");
        let c = r.current("dan").expect("registered");
        assert_eq!(c.contact, "sip:dan@192.0.2.4:5062");
        assert_eq!(c.user_agent, "Phone 2.0");
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(c.expires_unix.abs_diff(wall + 600) <= 1);
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(r.current("dan"), None);
    }
}
