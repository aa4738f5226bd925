use std::net::{IpAddr, Ipv4Addr};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A real edge (no applications) serving TCP on loopback within `limits`.
fn serve(limits: Limits) -> (SocketAddr, Arc<Edge>, Arc<ConnLimits>) {
    let edge = crate::tests::test_edge();
    let metrics = edge.metrics.clone();
    let listener = bind_tcp(SocketAddr::new(LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnLimits::new(limits, metrics.tcp.clone());
    tokio::spawn(serve_stream(listener, edge.clone(), limits.clone(), None));
    tokio::spawn(close_locked_out(limits.clone(), Arc::downgrade(&edge)));
    (addr, edge, limits)
}

/// A real edge serving TLS on loopback within [`limits`], with a
/// certificate for `edge.example.test`: the directory holding the files,
/// the CA a client trusts, the address, the edge and the TLS bounds.
fn serve_tls() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    SocketAddr,
    Arc<Edge>,
    Arc<ConnLimits>,
) {
    let dir = tempfile::tempdir().unwrap();
    let crate::tls::tests::Issued { ca, cert, key } =
        crate::tls::tests::issue(dir.path(), &["edge.example.test"]);
    let tls = Arc::new(ServerTls::load(&cert, &key).unwrap());
    let edge = crate::tests::test_edge();
    let listener = bind_tcp(SocketAddr::new(LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnLimits::new(limits(), edge.metrics.tls.clone());
    tokio::spawn(serve_stream(
        listener,
        edge.clone(),
        limits.clone(),
        Some(tls),
    ));
    (dir, ca, addr, edge, limits)
}

fn limits() -> Limits {
    Limits {
        per_source: 2,
        total: 100,
        idle: Duration::from_secs(30),
        first_message: Duration::from_secs(5),
        max_header: 2048,
        ipv6_prefix: 64,
    }
}

fn options(headers: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{}\r\n\
         From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: {}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{headers}\r\n",
        rand::random::<u32>(),
        rand::random::<u32>(),
    )
    .into_bytes()
}

/// Everything the edge sends until it closes, and how long that took.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return (all, started.elapsed()),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn connections_past_the_per_source_cap_are_closed_unread() {
    let (addr, edge, limits) = serve(limits());
    let mut kept = Vec::new();
    for _ in 0..2 {
        kept.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(&options("Content-Length: 0\r\n")).await;
    let (got, _) = until_closed(&mut third).await;
    assert!(got.is_empty());
    let c = &edge.metrics.tcp;
    assert_eq!(c.refused_count(Refusal::PerSource), 1);
    assert_eq!(limits.open(), 2);
    assert_eq!(c.open.load(Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn silent_connections_close_at_the_first_message_deadline_and_idle_ones_later() {
    let (addr, edge, limits) = serve(limits());
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut talker = TcpStream::connect(addr).await.unwrap();
    talker
        .write_all(&options("Content-Length: 0\r\n"))
        .await
        .unwrap();
    let (got, took) = until_closed(&mut silent).await;
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // The other connection brought a message: it lives to its idle
    // timeout, 30 s after that message.
    let (got, took) = until_closed(&mut talker).await;
    assert!(
        got.starts_with(b"SIP/2.0 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        took >= Duration::from_secs(24) && took < Duration::from_secs(26),
        "{took:?}"
    );
    // The slot is freed (and the reason counted) as the task ends.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let c = &edge.metrics.tcp;
    assert_eq!(c.closed_count(Closure::FirstMessage), 1);
    assert_eq!(c.closed_count(Closure::Idle), 1);
    assert_eq!(limits.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn keep_alives_keep_a_connection_but_do_not_count_as_a_first_message() {
    let (addr, edge, _) = serve(limits());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"\r\n");
    let (_, took) = until_closed(&mut s).await;
    assert!(took < Duration::from_secs(6), "{took:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(edge.metrics.tcp.closed_count(Closure::FirstMessage), 1);
    // After a message, pings hold it open past the idle timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&options("Content-Length: 0\r\n"))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = s.read(&mut buf).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.write_all(b"\r\n\r\n").await.unwrap();
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
    }
    assert_eq!(edge.metrics.tcp.closed_count(Closure::Idle), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_content_length_gets_400_before_the_close() {
    let (addr, edge, _) = serve(limits());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&options("")).await.unwrap();
    let (got, _) = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with(
            "SIP/2.0 400 Bad Request (missing Content-Length on a stream transport)\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("CSeq: 1 OPTIONS\r\n"), "{text}");
    // The edge reads what else comes for a second before it lets go.
    tokio::time::sleep(LINGER * 2).await;
    assert_eq!(edge.metrics.tcp.closed_count(Closure::Framing), 1);
    assert_eq!(edge.metrics.tcp_framing_errors.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn an_overlong_header_section_closes_the_connection() {
    let (addr, edge, _) = serve(limits());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut big = b"OPTIONS sip:a@example.com SIP/2.0\r\nX: ".to_vec();
    big.extend_from_slice(&[b'a'; 4096]);
    let _ = s.write_all(&big).await;
    let (got, took) = until_closed(&mut s).await;
    assert!(got.is_empty());
    assert!(took < Duration::from_secs(1), "{took:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(edge.metrics.tcp.closed_count(Closure::TooLarge), 1);
}

#[tokio::test(start_paused = true)]
async fn a_locked_out_source_is_closed_and_refused() {
    let (addr, edge, limits) = serve(limits());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&options("Content-Length: 0\r\n"))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(s.read(&mut buf).await.unwrap() > 0);
    edge.lockouts.lock(LOCAL, Duration::from_mins(1)).unwrap();
    let (_, took) = until_closed(&mut s).await;
    assert!(took <= Duration::from_secs(2), "{took:?}");
    let mut again = TcpStream::connect(addr).await.unwrap();
    let (got, _) = until_closed(&mut again).await;
    assert!(got.is_empty());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let c = &edge.metrics.tcp;
    assert_eq!(c.closed_count(Closure::LockedOut), 1);
    assert_eq!(c.refused_count(Refusal::LockedOut), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(limits.open(), 0);
}

/// Over TLS: the request is answered on the connection, the Via keeps
/// its transport, a handshake that fails is counted, and nothing of a
/// TLS connection is counted as TCP.
#[tokio::test]
async fn tls_connections_are_served_and_failed_handshakes_counted() {
    let (_dir, ca, addr, edge, _) = serve_tls();

    let client = crate::tls::ClientTls::new(Some(&ca)).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = client.connect("edge.example.test", tcp).await.unwrap();
    let req = String::from_utf8(options("Content-Length: 0\r\n"))
        .unwrap()
        .replace("SIP/2.0/TCP", "SIP/2.0/TLS");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(got.starts_with("SIP/2.0 200 "), "{got}");
    assert!(got.contains("Via: SIP/2.0/TLS 127.0.0.1:5999;"), "{got}");
    assert_eq!(edge.metrics.tls.open.load(Relaxed), 1);
    drop(s);

    // Plain SIP sent to the TLS port is no handshake.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(&options("Content-Length: 0\r\n"))
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(edge.metrics.tls.closed_count(Closure::Handshake), 1);
    assert_eq!(edge.metrics.tcp.open.load(Relaxed), 0);
}

/// A connection to the TLS port that never starts its handshake is
/// closed at the first-message deadline.
#[tokio::test(start_paused = true)]
async fn a_tls_connection_without_a_handshake_closes_at_the_first_message_deadline() {
    let (_dir, _, addr, edge, limits) = serve_tls();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (got, took) = until_closed(&mut silent).await;
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(edge.metrics.tls.closed_count(Closure::FirstMessage), 1);
    assert_eq!(limits.open(), 0);
}

#[test]
fn the_total_fits_the_open_file_limit() {
    assert_eq!(total_within(10_000, 1_048_576), 10_000);
    assert_eq!(total_within(10_000, 4096), 3072);
    assert_eq!(total_within(10_000, 100), 1);
    assert!(raise_fd_limit() >= 1024);
}
