//! Guards against locking yourself out: the ports SSH uses on this host, so that `--restrict`
//! (drop every source not in the list) is refused on them without `--force`.
//!
//! Read from the environment and /proc only; nothing here spawns a tool or writes anything.

use std::collections::BTreeMap;
use std::fs;

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
pub fn restrict_refusals(what: &str, ports: &[u16]) -> Vec<String> {
    let ssh = ssh_ports();
    ports
        .iter()
        .filter_map(|port| {
            ssh.get(port).map(|why| {
                format!(
                    "restricting {what} would drop SSH on port {port} ({why}) from every address not in the list: you could lock yourself out"
                )
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
        assert_eq!(restrict_refusals("x", &[80, 443]), Vec::<String>::new());
        assert!(restrict_refusals("x", &[22, 80])[0].contains("lock yourself out"));
    }
}
