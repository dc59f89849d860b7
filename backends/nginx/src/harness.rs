//! A private nginx configuration for tests, and the conformance harness on it.
//!
//! [`Sandbox`] lays out a folder with its own `nginx.conf` (own pid file, error log, temporary
//! paths and `conf.d/`), never touching the system's `/etc/nginx`; the commands it hands the
//! backend point nginx at that configuration with `-p`, `-e` and `-c`. The end-to-end tests run
//! a real nginx on it; the conformance harness only validates with the real `nginx -t` and
//! records reloads in a log outside the configuration folder (there is no server to reload:
//! that reloading really changes what nginx trusts is proven end to end, in
//! `tests/e2e_nginx.rs`).
//!
//! For this backend the suite's words mean: the "firewall" is the configuration folder (its
//! [`Harness::dump`] is every file's path, mode and bytes), a "foreign rule" is somebody else's
//! file in `conf.d/`, and "drift" is our include file edited or deleted by hand.

use std::path::{Path, PathBuf};

use cf_allowlist_backend::conformance::Harness;
use cf_allowlist_backend::{Backend, Policy};

use crate::{NginxBackend, NginxOptions, names};

/// A folder holding an nginx configuration of its own.
#[derive(Debug)]
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    /// A sandbox whose `http` block includes `conf.d/*.conf` and then `http_extra` (for
    /// example a `server` block).
    pub fn new(http_extra: &str) -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("cf-allowlist-nginx-")
            .tempdir()
            .expect("temp dir");
        let sandbox = Sandbox { root };
        for folder in [sandbox.conf_dir().join("conf.d"), sandbox.run_dir()] {
            std::fs::create_dir_all(folder).expect("create sandbox folders");
        }
        let run = sandbox.run_dir();
        let run = run.display();
        let conf = sandbox.conf_dir();
        let conf = conf.display();
        let main = format!(
            "# The tests' own nginx: nothing here refers to /etc/nginx.\n\
             worker_processes 1;\n\
             pid {run}/nginx.pid;\n\
             error_log {run}/error.log notice;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20 client_body_temp_path {run}/body;\n\
             \x20 proxy_temp_path {run}/proxy;\n\
             \x20 fastcgi_temp_path {run}/fastcgi;\n\
             \x20 uwsgi_temp_path {run}/uwsgi;\n\
             \x20 scgi_temp_path {run}/scgi;\n\
             \x20 access_log off;\n\
             \x20 include {conf}/conf.d/*.conf;\n\
             {http_extra}\
             }}\n"
        );
        std::fs::write(sandbox.main_conf(), main).expect("write nginx.conf");
        sandbox
    }

    /// The folder holding `nginx.conf` and `conf.d/`: what a dump covers.
    pub fn conf_dir(&self) -> PathBuf {
        self.root.path().join("conf")
    }

    /// The folder for the pid file, logs and nginx's temporary paths.
    pub fn run_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    /// The main configuration file.
    pub fn main_conf(&self) -> PathBuf {
        self.conf_dir().join("nginx.conf")
    }

    /// The include file the backend owns: `conf.d/cf-allowlist-realip.conf`.
    pub fn include_path(&self) -> PathBuf {
        let name = Path::new(names::DEFAULT_PATH)
            .file_name()
            .expect("the default path names a file");
        self.conf_dir().join("conf.d").join(name)
    }

    /// `nginx` with the arguments that point it at this sandbox (prefix, error log, config),
    /// followed by `extra`.
    pub fn nginx_command(&self, extra: &[&str]) -> Vec<String> {
        let mut command = vec![
            "nginx".to_owned(),
            "-p".to_owned(),
            format!("{}/", self.run_dir().display()),
            "-e".to_owned(),
            self.run_dir().join("error.log").display().to_string(),
            "-c".to_owned(),
            self.main_conf().display().to_string(),
        ];
        command.extend(extra.iter().map(|arg| (*arg).to_owned()));
        command
    }

    /// `nginx -t -q` on this sandbox's configuration.
    pub fn test_command(&self) -> Vec<String> {
        self.nginx_command(&["-t", "-q"])
    }

    /// `nginx -s reload` for the nginx running on this sandbox's configuration.
    pub fn reload_command(&self) -> Vec<String> {
        self.nginx_command(&["-s", "reload"])
    }

    /// Every file under the configuration folder with its mode and bytes, in path order.
    pub fn dump(&self) -> String {
        let mut files = Vec::new();
        let mut stack = vec![self.conf_dir()];
        while let Some(folder) = stack.pop() {
            for entry in std::fs::read_dir(&folder).expect("read sandbox folder") {
                let path = entry.expect("folder entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("stat");
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    files.push(format!(
                        "== {} {:o}\n{}",
                        path.strip_prefix(self.conf_dir()).unwrap().display(),
                        meta.permissions().mode(),
                        String::from_utf8_lossy(&bytes)
                    ));
                }
            }
        }
        files.sort();
        files.concat()
    }
}

/// The conformance harness: a [`Sandbox`] without a server, validated by the real `nginx -t`,
/// with reloads recorded in a log outside the dumped folder.
#[derive(Debug)]
pub struct NginxHarness {
    sandbox: Sandbox,
}

/// Somebody else's file in `conf.d/`.
const FOREIGN_FILE: &str = "admin.conf";
const FOREIGN_TEXT: &str = "# the admin's own settings\nserver_tokens off;\n";

impl NginxHarness {
    /// A fresh sandbox.
    pub fn new() -> NginxHarness {
        NginxHarness {
            sandbox: Sandbox::new(""),
        }
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// How many reloads the backends of this harness ran.
    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(self.reload_log())
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    fn reload_log(&self) -> PathBuf {
        self.sandbox.run_dir().join("reloads")
    }

    fn foreign_path(&self) -> PathBuf {
        self.sandbox.conf_dir().join("conf.d").join(FOREIGN_FILE)
    }

    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let path = self.sandbox.include_path();
        let text = std::fs::read_to_string(&path).expect("our include file exists");
        std::fs::write(&path, edit(text)).expect("edit the include file");
    }
}

impl Default for NginxHarness {
    fn default() -> NginxHarness {
        NginxHarness::new()
    }
}

impl Harness for NginxHarness {
    fn backend(&self, _policy: &Policy) -> Box<dyn Backend> {
        Box::new(NginxBackend::new(NginxOptions {
            path: self.sandbox.include_path(),
            test_command: self.sandbox.test_command(),
            reload_command: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "echo reload >> \"$0\"".to_owned(),
                self.reload_log().display().to_string(),
            ],
        }))
    }

    fn dump(&self) -> String {
        self.sandbox.dump()
    }

    fn add_foreign_rule(&self) {
        std::fs::write(self.foreign_path(), FOREIGN_TEXT).expect("write the foreign file");
    }

    fn foreign_rule_present(&self) -> bool {
        std::fs::read_to_string(self.foreign_path()).is_ok_and(|text| text == FOREIGN_TEXT)
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        vec![
            "range edited",
            "range added by hand",
            "unrecognised line added",
            "header comment edited",
            "real_ip_header deleted",
            "line duplicated",
            "lines reordered",
            "file truncated",
            "file deleted",
        ]
    }

    fn cause_drift(&self, kind: &str) {
        match kind {
            "range edited" => self.edit(|text| text.replacen("192.0.2.0/24", "192.0.2.0/25", 1)),
            "range added by hand" => self.edit(|text| {
                text.replace(
                    "real_ip_header",
                    "set_real_ip_from 203.0.113.0/24;\nreal_ip_header",
                )
            }),
            "unrecognised line added" => self.edit(|text| text + "real_ip_recursive on;\n"),
            "header comment edited" => self.edit(|text| text.replace("rewrites this", "rewrites")),
            "real_ip_header deleted" => {
                self.edit(|text| text.replace("real_ip_header CF-Connecting-IP;\n", ""))
            }
            "line duplicated" => self.edit(|text| {
                let line = text
                    .lines()
                    .find(|line| line.starts_with("set_real_ip_from"))
                    .expect("a range line")
                    .to_owned();
                text + &line + "\n"
            }),
            "lines reordered" => self.edit(|text| {
                let mut lines: Vec<&str> = text.lines().collect();
                let first = lines
                    .iter()
                    .position(|line| line.starts_with("set_real_ip_from"))
                    .expect("a range line");
                lines.swap(first, first + 1);
                lines.join("\n") + "\n"
            }),
            "file truncated" => self.edit(|text| text[..text.len() - 10].to_owned()),
            "file deleted" => {
                std::fs::remove_file(self.sandbox.include_path()).expect("delete the include file")
            }
            other => panic!("unknown drift {other:?}"),
        }
    }

    /// A real-IP list has no verdicts; the restrict behaviour is skipped for this harness.
    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
}
