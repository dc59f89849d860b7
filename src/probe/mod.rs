//! Read-only probes of the host for `doctor`: the kernel's socket tables and counters
//! ([`sockets`], from `/proc`) and a TLS handshake with the origin itself ([`tls`]).
//!
//! They live apart from the firewall backends because they read no firewall: nothing here
//! spawns a tool or writes anything. Each parser is a pure function of the text the kernel
//! prints, so unit tests feed it recorded text; the live readers only read the files of the
//! calling thread's network namespace (`/proc/thread-self/net`, `/proc/sys/net`).
//!
//! The TLS handshake is the one network connection outside `sources`: it goes to the
//! origin's own listening socket on this host (a loopback or local address), never out.

pub mod sockets;
pub mod tls;
