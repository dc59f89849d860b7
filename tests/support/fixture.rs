//! A fixture HTTP server standing in for Cloudflare: it serves whatever the test sets for a
//! path, from a thread inside the test's namespace (or on the host's loopback), and stops on
//! drop. Just enough HTTP/1.1 for a GET with `Connection: close`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns::enter_named;

/// What the server answers for a path.
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
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
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

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// The running server.
pub struct FixtureServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    routes: Routes,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureServer {
    /// Starts the server on 127.0.0.1 inside the named namespace (or the current one).
    pub fn start(netns: Option<&str>) -> FixtureServer {
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, port) = mpsc::channel();
        let netns = netns.map(str::to_owned);
        let (thread_routes, flag) = (routes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            if let Some(name) = netns {
                enter_named(&name);
            }
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind fixture server");
            listener.set_nonblocking(true).unwrap();
            ready.send(listener.local_addr().unwrap().port()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let routes = thread_routes.clone();
                        std::thread::spawn(move || serve(stream, &routes));
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
            routes,
            stop,
            thread: Some(thread),
        }
    }

    /// Sets the reply for `path`.
    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &Routes) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let reply = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Reply::status(404, "not found"));
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
}
