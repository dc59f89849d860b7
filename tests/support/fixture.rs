//! A fixture HTTP server standing in for Cloudflare, friendly or hostile: it answers whatever
//! the test sets for a path, from a thread inside the test's namespace (or on the host's
//! loopback), records the requests it got, and stops on drop. Just enough HTTP/1.1 for a GET
//! with `Connection: close`.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns::enter_named;

/// A plain answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::status(200, body)
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// How the server behaves for a path.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer normally.
    Reply(Reply),
    /// Accept the connection and never answer.
    Hang,
    /// Answer 200 with this body, one byte a second.
    Trickle(Vec<u8>),
    /// Answer 200 with no length and an endless body.
    Endless,
    /// Declare `declared` bytes, send `body`, and close.
    ShortBody {
        /// The Content-Length sent.
        declared: usize,
        /// What is actually sent.
        body: Vec<u8>,
    },
    /// 304 if the request's If-None-Match is `etag`, else 200 with `body` and the ETag.
    Conditional {
        /// The ETag.
        etag: String,
        /// The body of a 200.
        body: Vec<u8>,
    },
}

impl From<Reply> for Behaviour {
    fn from(reply: Reply) -> Behaviour {
        Behaviour::Reply(reply)
    }
}

/// A request the server got: path and headers (names lowercased).
#[derive(Debug, Clone)]
pub struct Request {
    /// The path.
    pub path: String,
    /// The headers.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, VecDeque<Behaviour>>>,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

/// The running server.
pub struct FixtureServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureServer {
    /// Starts the server on 127.0.0.1 inside the named namespace (or the current one).
    pub fn start(netns: Option<&str>) -> FixtureServer {
        let shared = Arc::new(Shared::default());
        let (ready, port) = mpsc::channel();
        let netns = netns.map(str::to_owned);
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            if let Some(name) = netns {
                enter_named(&name);
            }
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind fixture server");
            listener.set_nonblocking(true).unwrap();
            ready.send(listener.local_addr().unwrap().port()).unwrap();
            while !thread_shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = thread_shared.clone();
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(5))
            .expect("fixture server up");
        FixtureServer {
            port,
            shared,
            thread: Some(thread),
        }
    }

    /// Sets what `path` answers from now on.
    pub fn set(&self, path: &str, behaviour: impl Into<Behaviour>) {
        self.set_sequence(path, vec![behaviour.into()]);
    }

    /// Sets answers for `path` in turn; the last one repeats.
    pub fn set_sequence(&self, path: &str, behaviours: Vec<Behaviour>) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviours.into());
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 1024];
    while !raw.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let request = Request {
        path: path.clone(),
        headers,
    };
    shared.requests.lock().unwrap().push(request.clone());
    let behaviour = {
        let mut routes = shared.routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
            Some(queue) => queue.front().cloned().unwrap(),
            None => Behaviour::Reply(Reply::status(404, "not found")),
        }
    };
    let stopped = || shared.stop.load(Ordering::SeqCst);
    match behaviour {
        Behaviour::Reply(reply) => write_reply(&mut stream, &reply),
        Behaviour::Hang => {
            while !stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Behaviour::Trickle(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for byte in body {
                if stopped() || stream.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Behaviour::Endless => {
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .is_err()
            {
                return;
            }
            let chunk = "198.51.100.0/24\n".repeat(4096);
            while !stopped() && stream.write_all(chunk.as_bytes()).is_ok() {}
        }
        Behaviour::ShortBody { declared, body } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        Behaviour::Conditional { etag, body } => {
            if request.header("if-none-match") == Some(etag.as_str()) {
                write_reply(&mut stream, &Reply::status(304, "").header("ETag", &etag));
            } else {
                write_reply(&mut stream, &Reply::ok(body).header("ETag", &etag));
            }
        }
    }
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) {
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if reply.status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
}
