//! What the control plane shows of an endpoint's registration (Plivo's
//! `sip_registered`, `sip_contact`, `sip_expires`, `sip_user_agent`).
//! Registrations live where REGISTERs arrive, at the edges (and, for a
//! fleet, in its Redis); the control plane asks through [`Registrations`].

/// An endpoint's current binding: the one that expires last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The Contact URI the endpoint registered.
    pub contact: String,
    /// When the binding expires, in seconds since the Unix epoch.
    pub expires_unix: u64,
    /// The REGISTER's User-Agent (empty when it had none).
    pub user_agent: String,
}

/// Where the control plane finds registrations.
pub trait Registrations: Send + Sync {
    /// The live registration of `username`, if any.
    fn current(&self, username: &str) -> Option<Registration>;
}
