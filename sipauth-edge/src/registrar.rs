//! Registrations of SIP endpoints (REGISTER), for the non-auth mode: an
//! INVITE to an application without `sip_auth_type` is taken only from an
//! endpoint of the application's account with a live registration.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Binding {
    contact: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Registrar {
    bindings: Mutex<HashMap<String, Vec<Binding>>>,
}

impl Registrar {
    /// Adds or refreshes a binding; `secs` 0 removes it.
    pub fn bind(&self, username: &str, contact: &str, secs: u32) {
        let now = Instant::now();
        let mut m = self.bindings.lock().expect("registrar");
        let list = m.entry(username.to_owned()).or_default();
        list.retain(|b| b.contact != contact && b.expires > now);
        if secs > 0 {
            list.push(Binding {
                contact: contact.to_owned(),
                expires: now + Duration::from_secs(u64::from(secs)),
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

    /// Every live binding as (username, contact, seconds left).
    pub fn all(&self) -> Vec<(String, String, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bindings_expire_and_refresh() {
        let r = Registrar::default();
        r.bind("alice123", "<sip:alice@192.0.2.1:5060>", 60);
        assert!(r.is_live("alice123"));
        tokio::time::advance(Duration::from_secs(50)).await;
        r.bind("alice123", "<sip:alice@192.0.2.1:5060>", 60);
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(r.is_live("alice123"), "refreshed");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!r.is_live("alice123"), "expired");
        r.bind("bob", "<sip:bob@192.0.2.2>", 60);
        r.bind("bob", "<sip:bob@192.0.2.2>", 0);
        assert!(!r.is_live("bob"), "unregistered");
        r.bind("carol", "<sip:c@192.0.2.3>", 60);
        r.clear("carol");
        assert!(!r.is_live("carol"));
        r.sweep();
    }
}
