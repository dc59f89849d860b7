//! The safety guards, each with a name (`shrink`, `owner`, `ssh`, `reach`) that its refusal
//! prints with the exact override (`--force=ssh`), and what `--force` overrides: bare, every
//! guard but `ssh`; with names, only those. Also the ports SSH uses on this host, so that
//! `--restrict` (drop every source not in the list) is refused on them.
//!
//! Read from the environment and /proc only; nothing here spawns a tool or writes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;

use serde::Serialize;

/// A safety guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Guard {
    /// The list (or a backend) would lose many ranges at once.
    Shrink,
    /// Another state directory owns the parts.
    Owner,
    /// Restrict would drop SSH from every address not in the list.
    Ssh,
    /// The plan lets fewer listed sources reach a managed port than now.
    Reach,
}

impl Guard {
    /// Every guard.
    pub const ALL: [Guard; 4] = [Guard::Shrink, Guard::Owner, Guard::Ssh, Guard::Reach];

    /// Its name, as `--force=NAME` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Guard::Shrink => "shrink",
            Guard::Owner => "owner",
            Guard::Ssh => "ssh",
            Guard::Reach => "reach",
        }
    }

    /// What to check before overriding it.
    pub fn hint(self) -> &'static str {
        match self {
            Guard::Shrink => {
                "check the source; if the list really shrank, run again with --force=shrink"
            }
            Guard::Owner => {
                "`purge` from the state directory that owns the parts, or adopt them with --force=owner"
            }
            Guard::Ssh => {
                "leave the SSH port out of `ports` (or use --no-restrict); if you have another way in, run again with --force=ssh (a bare --force does not override this guard)"
            }
            Guard::Reach => {
                "keep the backend that carries the traffic configured, or allow the ranges where the blocker is first; to accept losing that reach, run again with --force=reach"
            }
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Guard {
    type Err = String;

    fn from_str(text: &str) -> Result<Guard, String> {
        Guard::ALL
            .into_iter()
            .find(|guard| guard.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown guard `{text}` (the guards are {})",
                    Guard::ALL.map(Guard::name).join(", ")
                )
            })
    }
}

/// One guard's reason against a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The guard.
    pub guard: Guard,
    /// Why, as a lowercase phrase.
    pub reason: String,
}

impl Refusal {
    /// A refusal by `guard`.
    pub fn new(guard: Guard, reason: impl Into<String>) -> Refusal {
        Refusal {
            guard,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} (override: --force={})",
            self.guard, self.reason, self.guard
        )
    }
}

/// What `--force` overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Force(BTreeSet<Guard>);

impl Force {
    /// From the command line: `None` without `--force`; an empty list for a bare `--force`
    /// (every guard but `ssh`); else the named guards.
    pub fn parse(names: Option<&[String]>) -> Result<Force, String> {
        let Some(names) = names else {
            return Ok(Force::default());
        };
        let named: Vec<&String> = names.iter().filter(|name| !name.is_empty()).collect();
        if named.is_empty() {
            return Ok(Force(
                Guard::ALL
                    .into_iter()
                    .filter(|guard| *guard != Guard::Ssh)
                    .collect(),
            ));
        }
        named
            .into_iter()
            .map(|name| name.trim().parse())
            .collect::<Result<_, _>>()
            .map(Force)
    }

    /// Whether `guard` is overridden.
    pub fn overrides(&self, guard: Guard) -> bool {
        self.0.contains(&guard)
    }
}

/// The ports that carry SSH here, each with why we think so.
pub fn ssh_ports() -> BTreeMap<u16, String> {
    let mut ports = BTreeMap::from([(22, "the standard SSH port".to_owned())]);
    if let Some(port) = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|connection| connection.split_whitespace().nth(3)?.parse::<u16>().ok())
    {
        ports
            .entry(port)
            .or_insert_with(|| "the port of this SSH session ($SSH_CONNECTION)".to_owned());
    }
    for port in sshd_listening_ports() {
        ports
            .entry(port)
            .or_insert_with(|| "a port sshd listens on".to_owned());
    }
    ports
}

/// The TCP ports that processes named `sshd` listen on, in this network namespace.
fn sshd_listening_ports() -> Vec<u16> {
    let mut inodes = Vec::new();
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for process in processes.flatten() {
        let path = process.path();
        let is_sshd = fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "sshd");
        if !is_sshd {
            continue;
        }
        let Ok(fds) = fs::read_dir(path.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(inode) = fs::read_link(fd.path()).ok().and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            }) {
                inodes.push(inode);
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut ports = Vec::new();
    for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        ports.extend(listening_ports(&text, &inodes));
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// From a /proc/net/tcp table: the local ports of the listening sockets among `inodes`.
fn listening_ports(table: &str, inodes: &[u64]) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let state = fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let port = fields.get(1)?.rsplit(':').next()?;
            (*state == "0A" && inodes.contains(&inode))
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

/// Why restricting `ports` could lock the admin out, one reason per SSH port among them.
pub fn restrict_refusals(what: &str, ports: &[u16]) -> Vec<Refusal> {
    let ssh = ssh_ports();
    ports
        .iter()
        .filter_map(|port| {
            ssh.get(port).map(|why| {
                Refusal::new(Guard::Ssh, format!(
                    "restricting {what} would drop SSH on port {port} ({why}) from every address not in the list: you could lock yourself out"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0100007F:07E6 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_ports(table, &[4242]), vec![2022]);
        assert_eq!(listening_ports(table, &[4343]), vec![80]);
        assert!(listening_ports(table, &[1]).is_empty());
    }

    #[test]
    fn port_22_is_always_guarded() {
        assert!(ssh_ports().contains_key(&22));
        assert!(restrict_refusals("x", &[80, 443]).is_empty());
        let refusal = &restrict_refusals("x", &[22, 80])[0];
        assert!(refusal.reason.contains("lock yourself out"));
        assert!(refusal.to_string().contains("--force=ssh"), "{refusal}");
    }

    #[test]
    fn a_bare_force_overrides_every_guard_but_ssh_and_names_override_only_themselves() {
        let bare = Force::parse(Some(&[])).unwrap();
        assert!(bare.overrides(Guard::Shrink) && bare.overrides(Guard::Reach));
        assert!(!bare.overrides(Guard::Ssh));
        let named = Force::parse(Some(&["ssh".to_owned(), "owner".to_owned()])).unwrap();
        assert!(named.overrides(Guard::Ssh) && named.overrides(Guard::Owner));
        assert!(!named.overrides(Guard::Shrink));
        assert!(!Force::parse(None).unwrap().overrides(Guard::Shrink));
        let error = Force::parse(Some(&["sshh".to_owned()])).unwrap_err();
        assert!(error.contains("unknown guard `sshh`"), "{error}");
    }
}
