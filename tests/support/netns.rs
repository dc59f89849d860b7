//! Network namespaces made by the tests (and deleted on drop), threads that enter them, and a
//! two-host lab: an "origin" with a firewall and listeners, and an "edge" that connects from
//! chosen source addresses, joined by a veth pair. Only documentation addresses are used.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub use cf_allowlist_testkit::{must, unshare_thread_netns};

/// Moves the calling thread into the named namespace.
pub fn enter_named(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: setns takes a valid open descriptor and changes only the calling thread.
    #[allow(unsafe_code)]
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name and its loopback up.
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "cfa-{role}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        must("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip -n NAME ARGS…`.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// Adds each address (with its prefix length) to `device`; IPv6 ones without duplicate
    /// address detection, so they are usable at once.
    pub fn add_addresses(&self, device: &str, addresses: &[&str]) {
        for address in addresses {
            if address.contains(':') {
                self.ip(&["-6", "addr", "add", address, "dev", device, "nodad"]);
            } else {
                self.ip(&["addr", "add", address, "dev", device]);
            }
        }
    }

    /// Runs `program args…` inside the namespace and panics if it fails.
    #[track_caller]
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// Runs `program args…` inside the namespace with `input` on stdin; panics if it fails.
    #[track_caller]
    pub fn exec_with_input(&self, program: &str, args: &[&str], input: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {program}: {error}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{program} failed: {}\n{input}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs `nft -f -` with `batch` inside the namespace.
    #[track_caller]
    pub fn nft_batch(&self, batch: &str) {
        self.exec_with_input("nft", &["-f", "-"], batch);
    }

    /// `nft -a list ruleset` inside the namespace: with handles, so a rewrite shows.
    pub fn ruleset(&self) -> String {
        self.exec("nft", &["-a", "list", "ruleset"])
    }

    /// Moves the calling thread into this namespace.
    pub fn enter_thread(&self) {
        enter_named(&self.name);
    }

    /// Runs `work` on a new thread inside this namespace and waits for its result.
    pub fn run_inside<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        cf_allowlist_testkit::on_new_thread(move || {
            enter_named(&name);
            work()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// TCP listeners that accept and close connections, on a thread inside a namespace; stopped
/// on drop.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    /// Listens on `[::]:port` (IPv4 and IPv6) for each port, inside `netns`.
    pub fn start(netns: &Netns, ports: &[u16]) -> Listeners {
        Listeners::serve(netns, "::", ports, drop)
    }

    /// Listens on `address:port` for each port, inside `netns`, and hands every accepted
    /// connection (blocking again) to `answer`.
    pub fn serve(
        netns: &Netns,
        address: &'static str,
        ports: &[u16],
        answer: fn(TcpStream),
    ) -> Listeners {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let name = netns.name.clone();
        let ports = ports.to_vec();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter_named(&name);
            let listeners: Vec<TcpListener> = ports
                .iter()
                .map(|port| {
                    let listener = TcpListener::bind((address, *port)).expect("bind listener");
                    listener.set_nonblocking(true).unwrap();
                    listener
                })
                .collect();
            ready.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                for listener in &listeners {
                    while let Ok((stream, _)) = listener.accept() {
                        stream.set_nonblocking(false).unwrap();
                        answer(stream);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        bound
            .recv_timeout(Duration::from_secs(5))
            .expect("listeners bound");
        Listeners {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Tries a TCP connection from `source` to `destination:port` inside `netns`; true if it was
/// accepted within the timeout (a drop shows as a timeout, a reject as a refusal).
pub fn connects(netns: &Netns, source: IpAddr, destination: IpAddr, port: u16) -> bool {
    netns.run_inside(move || {
        connect_from(source, destination, port, Duration::from_millis(400)).is_ok()
    })
}

/// A TCP connection from `source` to `destination:port` within `timeout`, made in the calling
/// thread's namespace (call it inside [`Netns::run_inside`]). A source address that cannot be
/// bound is a broken test setup, not a blocked connection: it panics.
pub fn connect_from(
    source: IpAddr,
    destination: IpAddr,
    port: u16,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let domain = if source.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|error| panic!("bind {source}: {error}"));
    socket.connect_timeout(&SocketAddr::new(destination, port).into(), timeout)?;
    Ok(socket.into())
}

/// Sends `request` from `source` to `server:port` inside `netns` and reads the answer to its
/// end (an HTTP/1.0 exchange: the server closes after answering, having logged the request).
pub fn http_exchange(
    netns: &Netns,
    source: IpAddr,
    server: IpAddr,
    port: u16,
    request: String,
) -> std::io::Result<String> {
    netns.run_inside(move || {
        let mut stream = connect_from(source, server, port, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}
