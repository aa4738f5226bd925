use std::path::PathBuf;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

/// The files [`issue`] wrote (test certificates; the rig has its own
/// helper for its processes, `sipauth_tests::pki`).
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

/// Serves one TLS connection with `server`: reads a line, writes it back.
async fn echo_once(server: Arc<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = server.acceptor();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(&buf[..n]).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn roundtrip(
    client: &ClientTls,
    host: &str,
    addr: std::net::SocketAddr,
) -> Result<Vec<u8>, HandshakeError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = client.connect(host, tcp).await?;
    s.write_all(b"ping").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    Ok(out)
}

#[tokio::test]
async fn a_client_trusting_the_ca_file_reaches_the_named_server() {
    let dir = tempfile::tempdir().unwrap();
    let Issued { ca, cert, key } = issue(dir.path(), &["edge.example.test"]);
    let addr = echo_once(Arc::new(ServerTls::load(&cert, &key).unwrap())).await;
    let client = ClientTls::new(Some(&ca)).unwrap();
    assert_eq!(
        roundtrip(&client, "edge.example.test", addr).await.unwrap(),
        b"ping"
    );
    // The same server under another name is refused for its certificate.
    let e = roundtrip(&client, "other.example.test", addr)
        .await
        .unwrap_err();
    assert!(!matches!(e, HandshakeError::Io(_)), "{e}");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Issued { cert, key, .. } = issue(dir.path(), &["edge.example.test"]);
    let other = tempfile::tempdir().unwrap();
    let Issued { ca: other_ca, .. } = issue(other.path(), &["edge.example.test"]);
    let addr = echo_once(Arc::new(ServerTls::load(&cert, &key).unwrap())).await;
    let client = ClientTls::new(Some(&other_ca)).unwrap();
    let e = roundtrip(&client, "edge.example.test", addr)
        .await
        .unwrap_err();
    // Both CAs bear the same name: the chain is found and its signature
    // does not verify.
    assert!(matches!(e, HandshakeError::Certificate(_)), "{e}");
}

#[tokio::test]
async fn reload_takes_new_files_and_keeps_the_old_certificate_on_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Issued { ca: ca1, cert, key } = issue(dir.path(), &["edge.example.test"]);
    let first_ca = dir.path().join("first-ca.pem");
    std::fs::rename(&ca1, &first_ca).unwrap();
    let server = Arc::new(ServerTls::load(&cert, &key).unwrap());
    let addr = echo_once(server.clone()).await;

    // A broken key file: the reload fails and the first certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    assert!(server.reload().is_err());
    let first = ClientTls::new(Some(&first_ca)).unwrap();
    assert_eq!(
        roundtrip(&first, "edge.example.test", addr).await.unwrap(),
        b"ping"
    );

    // A new CA and certificate: new handshakes get them.
    let Issued { ca: ca2, .. } = issue(dir.path(), &["edge.example.test"]);
    server.reload().unwrap();
    let second = ClientTls::new(Some(&ca2)).unwrap();
    assert_eq!(
        roundtrip(&second, "edge.example.test", addr).await.unwrap(),
        b"ping"
    );
    assert!(roundtrip(&first, "edge.example.test", addr).await.is_err());
}

#[test]
fn files_without_certificates_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = ClientTls::new(Some(&empty)).unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let e = ServerTls::load(&empty, &empty).err().unwrap();
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = ServerTls::load(&missing, &missing).err().unwrap();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}
