//! The conformance harness: the calling thread's own network namespace (made with `unshare`
//! by the integration tests), holding a policy-DROP ruleset for both families in one variant.

use std::process::{Command, Stdio};

use cf_allowlist_backend::conformance::Harness;
use cf_allowlist_backend::{Backend, Family, Policy};

use crate::{Concrete, IptablesBackend, IptablesOptions, Mode, Variant};

/// A typical host's rules for one family: policy DROP, established and loopback accepted
/// (and ICMPv6, for neighbour discovery), then `extra` rules (lines of `-A INPUT …`), then a
/// broader DROP for the web ports that our jump must come before.
pub fn base_rules(family: Family, extra: &str) -> String {
    let icmp = match family {
        Family::V4 => "",
        Family::V6 => "-A INPUT -p ipv6-icmp -j ACCEPT\n",
    };
    filter_table(&format!(
        "{icmp}{extra}-A INPUT -p tcp -m multiport --dports 80,443 -j DROP\n"
    ))
}

/// A filter table with policy DROP on INPUT, established and loopback accepted, then `rules`
/// (lines of `-A INPUT …`, each ending in a newline).
pub fn filter_table(rules: &str) -> String {
    format!(
        "*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
{rules}COMMIT
"
    )
}

/// Runs the iptables backend in one variant and mode.
#[derive(Debug)]
pub struct IptablesHarness {
    variant: Concrete,
    mode: Mode,
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl IptablesHarness {
    /// Loads the base rules into `variant` and returns a harness for `mode`.
    pub fn new(variant: Concrete, mode: Mode) -> IptablesHarness {
        let harness = IptablesHarness { variant, mode };
        harness.reload_base();
        harness
    }

    /// Flushes the filter tables and loads the base rules, as a firewall reload would.
    pub fn reload_base(&self) {
        for family in Family::ALL {
            run(
                &self.variant.tool(family, "restore"),
                &[],
                Some(&base_rules(family, "")),
            );
        }
    }

    fn iptables(&self, v6: bool, args: &[&str]) {
        let family = if v6 { Family::V6 } else { Family::V4 };
        let tool = self.variant.tool(family, "save").replace("-save", "");
        run(&tool, args, None);
    }
}

/// Drops what changes without anything being written: the save's timestamp comments,
/// packet counters, and ipset's random initval; sorts ipset members (hash order).
pub fn normalise(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut members: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with("add ") {
            members.push(line.to_owned());
            continue;
        }
        let line = match line.find(" [") {
            Some(at) if line.starts_with(':') => &line[..at],
            _ => line,
        };
        let line = match line.find(" initval ") {
            Some(at) => &line[..at],
            None => line,
        };
        lines.push(line.to_owned());
    }
    members.sort();
    lines.extend(members);
    lines.join("\n")
}

impl Harness for IptablesHarness {
    fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
        let variant = match self.variant {
            Concrete::Nft => Variant::Nft,
            Concrete::Legacy => Variant::Legacy,
        };
        Box::new(IptablesBackend::new(
            IptablesOptions {
                variant,
                mode: self.mode,
                docker_user: false,
            },
            policy.clone(),
        ))
    }

    fn dump(&self) -> String {
        let mut dump = String::new();
        for family in Family::ALL {
            dump.push_str(&run(
                &self.variant.tool(family, "save"),
                &["-t", "filter"],
                None,
            ));
        }
        if self.variant == Concrete::Nft {
            // nft's handles show a rewrite even when the rules read the same.
            dump.push_str(&run("nft", &["-a", "list", "ruleset"], None));
        }
        dump.push_str(&run("ipset", &["save"], None));
        normalise(&dump)
    }

    fn add_foreign_rule(&self) {
        for v6 in [false, true] {
            let source = if v6 {
                "2001:db8:1::/64"
            } else {
                "192.0.2.0/24"
            };
            self.iptables(
                v6,
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    source,
                    "-p",
                    "tcp",
                    "--dport",
                    "22",
                    "-m",
                    "comment",
                    "--comment",
                    "admin ssh",
                    "-j",
                    "ACCEPT",
                ],
            );
            self.iptables(v6, &["-N", "FOREIGN"]);
            self.iptables(v6, &["-A", "FOREIGN", "-j", "RETURN"]);
        }
    }

    fn foreign_rule_present(&self) -> bool {
        let dump = self.dump();
        dump.matches("admin ssh").count() == 2 && dump.matches("FOREIGN").count() >= 2
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        let mut kinds = vec![
            "jump deleted",
            "jump duplicated",
            "first rule of our chain deleted",
            "our chain flushed",
            "a rule of ours appended twice",
            "tables reloaded from the saved rules",
        ];
        if self.mode == Mode::Ipset {
            kinds.push("set member deleted");
        }
        kinds
    }

    fn cause_drift(&self, kind: &str) {
        let jump = [
            "-m",
            "comment",
            "--comment",
            "cf-allowlist",
            "-j",
            "CF-ALLOWLIST",
        ];
        match kind {
            "jump deleted" => {
                let mut args = vec!["-D", "INPUT"];
                args.extend(jump);
                self.iptables(false, &args);
            }
            "jump duplicated" => {
                let mut args = vec!["-A", "INPUT"];
                args.extend(jump);
                self.iptables(true, &args);
            }
            "first rule of our chain deleted" => self.iptables(false, &["-D", "CF-ALLOWLIST", "1"]),
            "our chain flushed" => self.iptables(true, &["-F", "CF-ALLOWLIST"]),
            "a rule of ours appended twice" => {
                let save = run(
                    &self.variant.tool(Family::V4, "save"),
                    &["-t", "filter"],
                    None,
                );
                let first = save
                    .lines()
                    .find(|line| line.starts_with("-A CF-ALLOWLIST "))
                    .expect("a rule of ours")
                    .to_owned();
                run(
                    &self.variant.tool(Family::V4, "restore"),
                    &["--noflush"],
                    Some(&format!("*filter\n{first}\nCOMMIT\n")),
                );
            }
            "tables reloaded from the saved rules" => self.reload_base(),
            "set member deleted" => {
                let save = run("ipset", &["save", "cf-allowlist-v4"], None);
                let member = save
                    .lines()
                    .find_map(|line| line.strip_prefix("add cf-allowlist-v4 "))
                    .expect("a member")
                    .to_owned();
                run("ipset", &["del", "cf-allowlist-v4", &member], None);
            }
            other => panic!("unknown drift {other:?}"),
        }
    }

    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        Family::ALL
            .iter()
            .map(|family| {
                run(&self.variant.tool(*family, "save"), &["-t", "filter"], None)
                    .lines()
                    .filter(|line| line.starts_with("-A CF-ALLOWLIST "))
                    .map(|line| {
                        if line.ends_with("-j DROP") {
                            "drop".to_owned()
                        } else {
                            "accept".to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
