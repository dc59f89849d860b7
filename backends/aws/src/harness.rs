//! Test support (behind the `harness` feature, never in the binary): a moto EC2 server on a
//! free loopback port, the conformance [`Harness`] over it, and a replay server for the few
//! answers where moto differs from AWS.
//!
//! moto is found at `$CF_TEST_VENV/bin/moto_server` (tests/run installs it from
//! tests/requirements.txt); without it the tests fail loudly rather than skip. Each server is
//! stopped by its own PID when dropped. Every request it serves is recorded
//! (`MOTO_ENABLE_RECORDING`), so tests count the write calls a run made.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    AddPrefixListEntry, Filter, IpPermission, IpRange, RemovePrefixListEntry,
};
use cf_allowlist_backend::conformance::Harness;
use cf_allowlist_backend::{Backend, Family, Policy, Ranges};

use crate::{AwsBackend, AwsOptions, Connection, Mode, StateRecorder, names};

/// The static fake credentials every test uses.
pub const ACCESS_KEY: &str = "AKIDCFALLOWLISTTEST";
/// The static fake secret every test uses.
pub const SECRET_KEY: &str = "cf-allowlist-test-secret";
/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A moto EC2 server on a free loopback port, stopped (by PID) on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    recording: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    /// Starts moto from `$CF_TEST_VENV`, panicking (never skipping) when it is missing.
    pub fn start() -> MotoServer {
        let venv = std::env::var_os("CF_TEST_VENV").unwrap_or_else(|| {
            panic!(
                "CF_TEST_VENV is not set: the AWS tests need moto; run the suite with tests/run, \
                 which installs tests/requirements.txt into target/test-venv, or set CF_TEST_VENV \
                 to a virtualenv with moto[server] installed"
            )
        });
        let program = PathBuf::from(venv).join("bin/moto_server");
        assert!(
            program.is_file(),
            "{} is missing: install moto into the test venv (pip install -r tests/requirements.txt)",
            program.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let recording = dir.path().join("requests.jsonl");
        let log = dir.path().join("moto.log");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local address").port()
        };
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("moto log"))
            .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("moto log"))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        let mut server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            recording,
            log,
            _dir: dir,
        };
        // Readiness, not a timing assertion: wait until moto answers, or fail on its exit.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait().expect("moto status") {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(server._dir.path().join("moto.err"))
                        .unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = &server.log;
        server
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection to it with the static fake credentials.
    pub fn connection(&self) -> Connection {
        Connection {
            endpoint_url: Some(self.endpoint.clone()),
            static_credentials: Some((ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())),
        }
    }

    /// The EC2 actions served so far, in order (from moto's request recording).
    pub fn actions(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|request| {
                let body = request["body"].as_str().unwrap_or_default();
                let body = if request["body_encoded"].as_bool() == Some(true) {
                    String::from_utf8_lossy(&base64_decode(body)).into_owned()
                } else {
                    body.to_owned()
                };
                body.split('&')
                    .find_map(|pair| pair.strip_prefix("Action="))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an EC2 action writes (everything but Describe* and Get*).
pub fn is_write(action: &str) -> bool {
    !(action.starts_with("Describe") || action.starts_with("Get"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// A synchronous EC2 client for test set-up and inspection (its own runtime).
pub struct TestClient {
    runtime: tokio::runtime::Runtime,
    /// The client.
    pub client: Client,
}

impl TestClient {
    /// A client for `connection` in [`REGION`].
    pub fn new(connection: &Connection) -> TestClient {
        let (runtime, client) = crate::connect(Some(REGION), connection).expect("test client");
        TestClient { runtime, client }
    }

    /// Runs a future on the client's runtime.
    pub fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Creates a security group in the default VPC; returns its id.
    pub fn create_group(&self, name: &str) -> String {
        self.run(
            self.client
                .create_security_group()
                .group_name(name)
                .description("cf-allowlist test group")
                .send(),
        )
        .expect("CreateSecurityGroup")
        .group_id()
        .expect("group id")
        .to_owned()
    }

    /// Authorizes one IPv4 rule (tcp `port` from `cidr`) with `description`.
    pub fn authorize_v4(&self, group: &str, cidr: &str, port: i32, description: &str) {
        self.run(
            self.client
                .authorize_security_group_ingress()
                .group_id(group)
                .ip_permissions(
                    IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(port)
                        .to_port(port)
                        .ip_ranges(
                            IpRange::builder()
                                .cidr_ip(cidr)
                                .description(description)
                                .build(),
                        )
                        .build(),
                )
                .send(),
        )
        .expect("AuthorizeSecurityGroupIngress");
    }

    /// Revokes one rule by id.
    pub fn revoke(&self, group: &str, rule_id: &str) {
        self.run(
            self.client
                .revoke_security_group_ingress()
                .group_id(group)
                .security_group_rule_ids(rule_id)
                .send(),
        )
        .expect("RevokeSecurityGroupIngress");
    }

    /// The inbound rules of a group: (id, canonical text without the id).
    pub fn inbound_rules(&self, group: &str) -> Vec<(String, String)> {
        let lists = self
            .run(crate::ec2::read_lists(&self.client))
            .expect("lists");
        let list_name = |id: &str| {
            lists
                .iter()
                .find(|(_, list)| list.id == id)
                .map_or(id.to_owned(), |(family, _)| {
                    names::prefix_list_name(*family).to_owned()
                })
        };
        let answer = self
            .run(
                self.client
                    .describe_security_group_rules()
                    .filters(Filter::builder().name("group-id").values(group).build())
                    .send(),
            )
            .expect("DescribeSecurityGroupRules");
        let mut rules: Vec<(String, String)> = answer
            .security_group_rules()
            .iter()
            .filter(|rule| rule.is_egress() == Some(false))
            .map(|rule| {
                let source = rule
                    .cidr_ipv4()
                    .or(rule.cidr_ipv6())
                    .map(str::to_owned)
                    .or_else(|| {
                        rule.prefix_list_id()
                            .map(|id| format!("list {}", list_name(id)))
                    })
                    .unwrap_or_else(|| "other".to_owned());
                (
                    rule.security_group_rule_id().unwrap_or_default().to_owned(),
                    format!(
                        "{} {}-{} {source} {:?}",
                        rule.ip_protocol().unwrap_or_default(),
                        rule.from_port().unwrap_or(-1),
                        rule.to_port().unwrap_or(-1),
                        rule.description().unwrap_or_default()
                    ),
                )
            })
            .collect();
        rules.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        rules
    }

    /// Our inbound rules of a group (description starting with the owner tag, or a reference
    /// to one of our lists).
    pub fn our_rules(&self, group: &str) -> Vec<(String, String)> {
        self.inbound_rules(group)
            .into_iter()
            .filter(|(_, text)| {
                text.contains("\"cf-allowlist") || text.contains(" list cf-allowlist-")
            })
            .collect()
    }

    /// Everything of interest in the groups and our lists, one line each, rule and list
    /// identities after ` # handle ` (so the conformance suite can compare without them).
    pub fn dump(&self, groups: &[String]) -> String {
        let mut lines = Vec::new();
        for group in groups {
            for (id, text) in self.inbound_rules(group) {
                lines.push(format!("{group} {text} # handle {id}"));
            }
        }
        let lists = self
            .run(crate::ec2::read_lists(&self.client))
            .expect("lists");
        for (family, list) in &lists {
            let name = names::prefix_list_name(*family);
            lines.push(format!(
                "prefix list {name} max {} # handle {} v{}",
                list.max_entries, list.id, list.version
            ));
            for entry in &list.entries {
                lines.push(format!("prefix list {name} entry {entry}"));
            }
        }
        lines.sort();
        lines.join("\n")
    }

    /// Changes our list of `family` behind the tool's back.
    pub fn modify_list(&self, family: Family, add: &[&str], remove: &[&str]) {
        let lists = self
            .run(crate::ec2::read_lists(&self.client))
            .expect("lists");
        let list = &lists[&family];
        let mut request = self
            .client
            .modify_managed_prefix_list()
            .prefix_list_id(&list.id)
            .prefix_list_name(names::prefix_list_name(family))
            .current_version(list.version);
        for cidr in add {
            request = request.add_entries(AddPrefixListEntry::builder().cidr(*cidr).build());
        }
        for cidr in remove {
            request = request.remove_entries(RemovePrefixListEntry::builder().cidr(*cidr).build());
        }
        self.run(request.send()).expect("ModifyManagedPrefixList");
    }
}

/// The conformance harness: two security groups in moto, in one mode.
pub struct AwsHarness {
    /// The server (kept alive for the harness's life).
    pub moto: MotoServer,
    /// A client for set-up and inspection.
    pub ec2: TestClient,
    /// The two groups.
    pub groups: Vec<String>,
    mode: Mode,
    states: StateRecorder,
}

const FOREIGN: [(usize, &str, i32, &str); 2] = [
    (0, "203.0.113.5/32", 22, "office ssh"),
    (1, "198.51.100.200/32", 443, "team b health check"),
];

impl AwsHarness {
    /// A fresh moto with two empty groups.
    pub fn new(mode: Mode) -> AwsHarness {
        let moto = MotoServer::start();
        let ec2 = TestClient::new(&moto.connection());
        let groups = vec![ec2.create_group("web-a"), ec2.create_group("web-b")];
        AwsHarness {
            moto,
            ec2,
            groups,
            mode,
            states: Arc::new(Mutex::new(None)),
        }
    }

    /// The backend options for these groups.
    pub fn options(&self) -> AwsOptions {
        AwsOptions {
            security_group_ids: self.groups.clone(),
            region: Some(REGION.to_owned()),
            mode: self.mode,
            max_rules: None,
        }
    }
}

impl Harness for AwsHarness {
    fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
        Box::new(
            AwsBackend::connected_to(self.options(), policy.clone(), self.moto.connection())
                .recording_states(self.states.clone()),
        )
    }

    fn dump(&self) -> String {
        self.ec2.dump(&self.groups)
    }

    fn add_foreign_rule(&self) {
        for (group, cidr, port, description) in FOREIGN {
            self.ec2
                .authorize_v4(&self.groups[group], cidr, port, description);
        }
    }

    fn foreign_rule_present(&self) -> bool {
        FOREIGN.iter().all(|(group, cidr, port, description)| {
            let wanted = format!("tcp {port}-{port} {cidr} {description:?}");
            self.ec2
                .inbound_rules(&self.groups[*group])
                .iter()
                .filter(|(_, text)| *text == wanted)
                .count()
                == 1
        })
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        match self.mode {
            Mode::Rules => vec![
                "revoke-one-of-ours",
                "our-description-on-another-port",
                "extra-range",
            ],
            Mode::PrefixList => vec!["revoke-a-reference", "remove-an-entry", "add-an-entry"],
        }
    }

    fn cause_drift(&self, kind: &str) {
        let group = &self.groups[1];
        match kind {
            "revoke-one-of-ours" | "revoke-a-reference" => {
                let (id, _) = self
                    .ec2
                    .our_rules(group)
                    .into_iter()
                    .next()
                    .expect("a rule of ours to revoke");
                self.ec2.revoke(group, &id);
            }
            "our-description-on-another-port" => {
                self.ec2
                    .authorize_v4(group, "192.0.2.0/24", 8080, names::RULE_DESCRIPTION)
            }
            "extra-range" => {
                self.ec2
                    .authorize_v4(group, "203.0.113.128/25", 80, names::RULE_DESCRIPTION)
            }
            "remove-an-entry" => self.ec2.modify_list(Family::V4, &[], &["192.0.2.0/24"]),
            "add-an-entry" => self.ec2.modify_list(Family::V4, &["203.0.113.128/25"], &[]),
            other => panic!("unknown drift {other}"),
        }
    }

    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        // Security groups only allow; there is no order and no drop of ours.
        self.groups
            .iter()
            .map(|group| {
                self.ec2
                    .our_rules(group)
                    .iter()
                    .map(|_| "accept".to_owned())
                    .collect()
            })
            .collect()
    }

    fn states_during_last_apply(&self) -> Option<Vec<Ranges>> {
        Some(
            self.states
                .lock()
                .expect("states")
                .clone()
                .unwrap_or_default(),
        )
    }

    fn has_structure_without_ranges(&self) -> bool {
        // Rules mode has nothing but the rules themselves; prefix-list mode has its lists and
        // references even when they hold nothing.
        self.mode == Mode::PrefixList
    }
}

/// A tiny HTTP server answering EC2 requests with recorded AWS answers, for the paths where
/// moto differs from AWS (a stale prefix-list version, a revoke of a rule that is already
/// gone). The test's handler picks the answer for each request (action and form body); every
/// request's body is kept for assertions.
pub struct Replay {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Picks the (HTTP status, XML body) answer to a request from its action and form body.
pub type Handler = Box<dyn Fn(&str, &str) -> (u16, String) + Send>;

impl Replay {
    /// Serves every request with `handler`.
    pub fn start(handler: Handler) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    serve(stream, &handler, &requests);
                }
            })
        };
        Replay {
            endpoint: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
            port,
            thread: Some(thread),
        }
    }

    /// A connection to it with the static fake credentials.
    pub fn connection(&self) -> Connection {
        Connection {
            endpoint_url: Some(self.endpoint.clone()),
            static_credentials: Some((ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())),
        }
    }

    /// The form bodies of every request so far, URL-decoded.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    /// The actions of every request so far.
    pub fn actions(&self) -> Vec<String> {
        self.requests().iter().map(|body| action_of(body)).collect()
    }
}

/// The `Action` of a form body.
pub fn action_of(body: &str) -> String {
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or_default()
        .to_owned()
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // The request line; nothing means the client closed the connection.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = url_decode(&String::from_utf8_lossy(&body));
        let (status, xml) = handler(&action_of(&body), &body);
        requests.lock().expect("requests").push(body);
        let reason = if status == 200 { "OK" } else { "Bad Request" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{xml}",
            xml.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An EC2 success answer for `action` wrapping `inner` XML, as AWS sends it.
pub fn answer_xml(action: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>5d2c9f5e-0000-4000-8000-000000000001</requestId>{inner}</{action}Response>"
    )
}

/// An EC2 error answer as AWS sends it.
pub fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>5d2c9f5e-0000-4000-8000-000000000000</RequestID></Response>"
    )
}
