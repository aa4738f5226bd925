//! Certificates for the rig: a private CA and a server certificate it
//! signed, as PEM files.

use std::path::{Path, PathBuf};

/// The files [`issue`] wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (leaf only).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

/// A new CA and a server certificate for `names` (DNS names or IP
/// addresses), written to `ca.pem`, `cert.pem` and `key.pem` in `dir`.
#[must_use]
pub fn issue(dir: &Path, names: &[&str]) -> Issued {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sipauth test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let signer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server names");
    let cert = params.signed_by(&key, &signer).expect("server certificate");
    let issued = Issued {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&issued.ca, ca.pem()).expect("write ca.pem");
    std::fs::write(&issued.cert, cert.pem()).expect("write cert.pem");
    std::fs::write(&issued.key, key.serialize_pem()).expect("write key.pem");
    issued
}
