//! Apache real-IP (`kind = "apache-realip"`) end to end: a real Apache from Debian's packages
//! with mod_remoteip, on its own configuration in a temporary folder (never `/etc/apache2`),
//! listening inside a network namespace the test makes, where clients bind documentation
//! addresses on the loopback. The CLI runs inside the namespace with a config naming the
//! include file and the commands that test (`apache2 -t`) and gracefully reload this Apache;
//! what Apache then believes is read from its access log (`%a` after mod_remoteip, `%{c}a` the
//! peer).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::netns::{Netns, http_exchange};
use crate::support::require_root;
use crate::support::server::Served;

const SERVER: &str = "192.0.2.1";
const PORT: u16 = 8080;
const LISTED: &str = "198.51.100.10";
const UNLISTED: &str = "203.0.113.10";
const CLAIMED: &str = "192.0.2.77";

/// A real Apache inside its own namespace; stopped by its PID on drop.
struct Apache(Served);

impl std::ops::Deref for Apache {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Apache {
    fn start() -> Apache {
        require_root();
        let netns = Netns::new("apache");
        netns.add_addresses(
            "lo",
            &["192.0.2.1/32", "198.51.100.10/32", "203.0.113.10/32"],
        );
        let work = tempfile::tempdir().expect("temp dir");
        let root = work.path();
        for folder in ["logs", "conf.d", "htdocs"] {
            std::fs::create_dir(root.join(folder)).unwrap();
        }
        std::fs::write(root.join("htdocs/index.html"), "origin\n").unwrap();
        std::fs::write(
            root.join("apache2.conf"),
            format!(
                "ServerRoot {root}\nPidFile {root}/apache2.pid\nMutex file:{root}\n\
                 ErrorLog {root}/logs/error.log\n\
                 LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
                 LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
                 LoadModule remoteip_module /usr/lib/apache2/modules/mod_remoteip.so\n\
                 User www-data\nGroup www-data\nServerName origin.test\n\
                 Listen {SERVER}:{PORT}\nDocumentRoot {root}/htdocs\n\
                 LogFormat \"%a %{{c}}a\" realip\nCustomLog {root}/logs/access.log realip\n\
                 IncludeOptional {root}/conf.d/*.conf\n",
                root = root.display()
            ),
        )
        .unwrap();
        // The workers run as www-data and must read the document root.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(root)
            .status()
            .expect("chmod");
        let process = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .args(["apache2", "-f"])
            .arg(root.join("apache2.conf"))
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start apache2 (Debian package apache2)");
        let apache = Apache(Served {
            process,
            netns,
            work,
            log: "logs/error.log",
        });
        apache.wait_until(|| apache.request(LISTED).is_ok(), "Apache to start");
        apache
    }

    /// One request from `source` claiming `CF-Connecting-IP: CLAIMED`; returns the access log
    /// line it produced (`client-after-remoteip peer`).
    fn request(&self, source: &str) -> std::io::Result<String> {
        let source: IpAddr = source.parse().unwrap();
        let before = self.access_log().len();
        let request =
            format!("GET / HTTP/1.0\r\nHost: origin.test\r\nCF-Connecting-IP: {CLAIMED}\r\n\r\n");
        let server: IpAddr = SERVER.parse().unwrap();
        http_exchange(&self.netns, source, server, PORT, request)?;
        // Apache writes the log line as the request ends; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.access_log();
            if log.len() > before {
                return Ok(log[before].clone());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("no access log line"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether Apache takes `source`'s claimed address as the client's.
    fn trusts(&self, source: &str) -> bool {
        let line = self.request(source).expect("request");
        if line == format!("{CLAIMED} {source}") {
            true
        } else {
            assert_eq!(line, format!("{source} {source}"), "access log line");
            false
        }
    }

    fn config(&self, list: &str, test_command: &str) -> PathBuf {
        std::fs::write(self.path("list"), list).unwrap();
        let conf = self.path("apache2.conf").display().to_string();
        let config = self.path("config.toml");
        std::fs::write(
            &config,
            format!(
                "sources = [{list:?}]\n[[backend]]\nkind = \"apache-realip\"\npath = {include:?}\n\
                 test_command = [{test_command:?}, \"-f\", {conf:?}, \"-t\"]\n\
                 reload_command = [\"apache2\", \"-f\", {conf:?}, \"-k\", \"graceful\"]\n",
                list = self.path("list").display().to_string(),
                include = self
                    .path("conf.d/cf-allowlist-remoteip.conf")
                    .display()
                    .to_string(),
            ),
        )
        .unwrap();
        config
    }
}

#[test]
fn apache_takes_the_client_address_from_cf_connecting_ip_only_from_listed_peers() {
    let apache = Apache::start();
    // Before any sync Apache trusts nobody's header.
    assert!(!apache.trusts(LISTED));

    let config = apache.config("198.51.100.0/24\n2001:db8:cf::/48\n", "apache2");
    apache
        .cf(&config, "sync")
        .code(0)
        .stdout_has("apache-realip (");
    let include =
        std::fs::read_to_string(apache.path("conf.d/cf-allowlist-remoteip.conf")).unwrap();
    assert!(
        include.contains("RemoteIPTrustedProxy 198.51.100.0/24\n"),
        "{include}"
    );
    // The graceful reload has happened once the listed peer is believed.
    apache.wait_until(
        || apache.trusts(LISTED),
        "the reload to trust the listed peer",
    );
    assert!(!apache.trusts(UNLISTED));

    // A second run changes nothing and reloads nothing.
    apache.cf(&config, "sync").code(0).says_nothing();

    // A test command that fails leaves the old file and Apache serving the old list.
    let before = std::fs::read(apache.path("conf.d/cf-allowlist-remoteip.conf")).unwrap();
    let broken = apache.config(
        "203.0.113.0/24\n198.51.100.0/24\n2001:db8:cf::/48\n",
        "false",
    );
    apache
        .cf(&broken, "sync")
        .code(1)
        .stderr_has("the previous file was put back and Apache was not reloaded");
    assert_eq!(
        std::fs::read(apache.path("conf.d/cf-allowlist-remoteip.conf")).unwrap(),
        before
    );
    assert!(apache.trusts(LISTED));
    assert!(!apache.trusts(UNLISTED));

    // The list grows: the newly listed peer is believed too.
    let grown = apache.config(
        "203.0.113.0/24\n198.51.100.0/24\n2001:db8:cf::/48\n",
        "apache2",
    );
    apache.cf(&grown, "sync").code(0);
    apache.wait_until(
        || apache.trusts(UNLISTED),
        "the reload to trust the new range",
    );

    // purge deletes our file and reloads: nobody's header is believed again.
    apache.cf(&grown, "purge").code(0);
    assert!(!apache.path("conf.d/cf-allowlist-remoteip.conf").exists());
    apache.wait_until(|| !apache.trusts(LISTED), "the reload after purge");
}
