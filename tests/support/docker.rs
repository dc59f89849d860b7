//! A published container port built the way Docker builds it: the container in its own
//! namespace behind a routed veth link, a DNAT of the host's port to it, `FORWARD` policy drop,
//! `-A FORWARD -j DOCKER-USER` first, then Docker's conntrack accept and its per-container
//! accept. The container's replies cross the origin's `FORWARD` (carrying the request's
//! conntrack status: `--ctstate DNAT`, `--ctorigdstport` the published port), which a
//! container answering from the origin's own namespace never shows.
//!
//! ```text
//!  edge ── origin (192.0.2.1:8443, DNAT) ── vc/eth0 ── container (192.0.2.250:443)
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::lab::{Lab, ORIGIN_V4};
use super::netns::{Listeners, Netns, connect_from};

/// The port the origin publishes.
pub const PUBLISHED: u16 = 8443;
/// The container's address (on a link of its own, in no served list).
pub const CONTAINER: &str = "192.0.2.250";
/// The container's port behind [`PUBLISHED`].
pub const CONTAINER_PORT: u16 = 443;
/// What the container answers to a request.
pub const ANSWER: &str = "hello from the container\n";

/// Docker's rules for one published port, in `iptables-restore --noflush` form (IPv4).
pub fn docker_rules() -> String {
    format!(
        "*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER ! -i vc -p tcp -m tcp --dport {PUBLISHED} -j DNAT --to-destination {CONTAINER}:{CONTAINER_PORT}
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o vc -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o vc -j DOCKER
-A FORWARD -i vc ! -o vc -j ACCEPT
-A DOCKER -d {CONTAINER}/32 ! -i vc -o vc -p tcp -m tcp --dport {CONTAINER_PORT} -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
"
    )
}

/// A container behind the lab's origin, answering requests on [`CONTAINER_PORT`]; torn down
/// on drop.
pub struct Container {
    /// The server (stopped first: fields drop in order).
    listeners: Listeners,
    /// Its namespace (dropped last).
    pub netns: Netns,
}

impl Container {
    /// Builds the container's link and server and loads Docker's rules into the origin's
    /// `variant` (`nft` or `legacy`), on top of whatever the origin holds.
    pub fn start(lab: &Lab, variant: &str) -> Container {
        let netns = Netns::new("container");
        lab.origin.ip(&[
            "link",
            "add",
            "vc",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ]);
        lab.origin
            .ip(&["addr", "add", "192.0.2.249/30", "dev", "vc"]);
        lab.origin.ip(&["link", "set", "vc", "up"]);
        netns.ip(&["addr", "add", &format!("{CONTAINER}/30"), "dev", "eth0"]);
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["route", "add", "default", "via", "192.0.2.249"]);
        lab.origin.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        lab.origin.exec_with_input(
            &format!("iptables-{variant}-restore"),
            &["--noflush"],
            &docker_rules(),
        );

        let listeners = Listeners::serve(&netns, "0.0.0.0", &[CONTAINER_PORT], answer);
        Container { listeners, netns }
    }
}

/// Answers a request that arrives within a second with [`ANSWER`].
fn answer(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut request = [0u8; 64];
    if stream.read(&mut request).is_ok_and(|read| read > 0) {
        let _ = stream.write_all(ANSWER.as_bytes());
    }
}

/// Whether `source` on the edge completes a TCP handshake with the published port and gets
/// the container's answer to a request.
pub fn answered(lab: &Lab, source: &str) -> bool {
    let source: IpAddr = source.parse().unwrap();
    let origin: IpAddr = ORIGIN_V4.parse().unwrap();
    lab.edge.run_inside(move || {
        let Ok(mut stream) = connect_from(source, origin, PUBLISHED, Duration::from_millis(600))
        else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        if stream.write_all(b"GET /\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer == ANSWER
    })
}
