//! Keeps the listed ranges open while `ufw` calls reload ufw's user chains (`write = "calls"`).
//!
//! Every `ufw` call on an enabled ufw reloads ufw's user chains: it flushes them and loads them
//! again, so for a few milliseconds per call none of ufw's user rules, ours included, is in
//! force (issue 20; `ufw_calls_mode_keeps_a_listed_range_open_during_an_apply` in
//! `tests/e2e_ufw.rs` catches it with packets). For the duration of a run of calls, a chain of
//! ours accepts the target's ranges on the managed ports, jumped to first from
//! `ufw-before-input` (`ufw6-before-input`), which that reload does not touch; it is removed
//! after the last call, in one `iptables-restore --noflush` transaction per family, as it was
//! added. A batch loads each family in one transaction and needs no bridge.

use cf_allowlist_backend::tool;
use cf_allowlist_backend::{Family, Ranges};

use crate::names;

fn restore(family: Family, script: &str) -> Result<(), tool::ToolError> {
    let program = tool::locate(match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    })?;
    tool::run(
        &program,
        &["-w", "30", "--noflush"],
        Some(script.as_bytes()),
    )?;
    Ok(())
}

/// The bridge, while it is up: the families it was added to.
#[derive(Debug)]
pub struct Bridge {
    families: Vec<Family>,
}

impl Bridge {
    /// Adds the bridge for `target` on `ports` (`80,443`) to every family whose ufw chains
    /// exist (a ufw without IPv6 has no `ufw6-before-input`: that family gets none).
    pub fn open(target: &Ranges, ports: &str) -> Bridge {
        let mut families = Vec::new();
        for family in Family::ALL {
            let mut script = format!("*filter\n:{} - [0:0]\n", names::BRIDGE_CHAIN);
            for range in target.family(family) {
                script.push_str(&format!(
                    "-A {} -s {range} -p tcp -m multiport --dports {ports} -j ACCEPT\n",
                    names::BRIDGE_CHAIN
                ));
            }
            script.push_str(&format!(
                "-I {} 1 -j {}\nCOMMIT\n",
                names::before_input(family),
                names::BRIDGE_CHAIN
            ));
            if restore(family, &script).is_ok() {
                families.push(family);
            }
        }
        Bridge { families }
    }

    /// Removes the bridge (its jump, then the chain). A jump already gone (a full `ufw reload`
    /// rebuilds `ufw-before-input`) leaves the chain to remove alone.
    pub fn close(self) -> Result<(), tool::ToolError> {
        for family in self.families {
            let chain = names::BRIDGE_CHAIN;
            let with_jump = format!(
                "*filter\n-D {} -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n",
                names::before_input(family)
            );
            if restore(family, &with_jump).is_err() {
                restore(
                    family,
                    &format!("*filter\n-F {chain}\n-X {chain}\nCOMMIT\n"),
                )?;
            }
        }
        Ok(())
    }
}
