//! The benchmark's answer_url server: the same XML for every request, on
//! keep-alive connections, one thread per connection. The rig's
//! `AnswerServer` reads one request per connection and checks signatures on
//! one thread, which is right for tests and too slow to stay out of the way
//! of thousands of calls per second.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sipauth_tests::netns::Netns;

/// Sees each complete request (head and body) just before it is answered.
pub type Observe = dyn Fn(&[u8]) + Send + Sync;
pub type Observer = Arc<Observe>;

pub struct QuickAnswer {
    pub addr: SocketAddr,
    /// Requests answered: on `/answer`, and on any other path.
    served: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
}

impl QuickAnswer {
    /// Listens on `addr` inside `ns`; every request gets `xml`. Threads
    /// inherit the CPU affinity of the caller.
    pub fn start(ns: &Netns, addr: SocketAddr, xml: &str) -> Self {
        Self::observed(ns, addr, xml, None)
    }

    /// Like [`QuickAnswer::start`], and `observer` sees every request.
    pub fn observed(ns: &Netns, addr: SocketAddr, xml: &str, observer: Option<Observer>) -> Self {
        let listener = ns.enter(|| TcpListener::bind(addr).expect("bind answer server"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let response = Arc::new(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            )
            .into_bytes(),
        );
        let (n, halt) = (served.clone(), stop.clone());
        std::thread::spawn(move || {
            // Connections are kept alive, so accepting is rare: a short
            // sleep when none is pending costs nothing measurable.
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (n, halt, response) = (n.clone(), halt.clone(), response.clone());
                        let observer = observer.clone();
                        std::thread::spawn(move || {
                            serve(stream, &response, &n, &halt, observer.as_deref());
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return,
                }
            }
        });
        Self { addr, served, stop }
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests on `/answer` answered so far.
    #[must_use]
    pub fn answers(&self) -> u64 {
        self.served[0].load(Ordering::Relaxed)
    }

    /// Requests on other paths (the hangup_url) answered so far.
    #[must_use]
    pub fn others(&self) -> u64 {
        self.served[1].load(Ordering::Relaxed)
    }
}

impl Drop for QuickAnswer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers every request on one connection until the peer closes it or the
/// server stops.
fn serve(
    stream: TcpStream,
    response: &[u8],
    served: &[AtomicU64; 2],
    stop: &AtomicBool,
    observer: Option<&Observe>,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut stream = stream;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // Answer every complete request in the buffer.
        while let Some(len) = request_len(&buf) {
            let answer = buf
                .split(|b| *b == b' ')
                .nth(1)
                .is_some_and(|path| path.starts_with(b"/answer"));
            if let Some(observe) = observer {
                observe(&buf[..len]);
            }
            buf.drain(..len);
            if stream.write_all(response).is_err() {
                return;
            }
            served[usize::from(!answer)].fetch_add(1, Ordering::Relaxed);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The length of the first complete request in `buf` (head and body), if
/// it has all arrived.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = std::str::from_utf8(&buf[..head])
        .ok()?
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

#[cfg(test)]
mod tests {
    use super::request_len;

    #[test]
    fn finds_head_and_body() {
        assert_eq!(request_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(request_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        let post = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nab";
        assert_eq!(request_len(post), None);
        let mut full = post.to_vec();
        full.extend_from_slice(b"cGET");
        assert_eq!(request_len(&full), Some(post.len() + 1));
    }
}
