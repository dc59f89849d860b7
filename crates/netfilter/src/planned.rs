//! The firewall as a plan leaves it: this host's ruleset with everything of ours taken out and
//! what each configured backend will hold put in, so that a dry run judges the same firewall
//! the run leaves.
//!
//! Our parts are recognised the way the backends mark them: rules whose comment carries
//! [`OWNER_TAG`] (nftables' accepts and restrict drop, iptables' jump and rules) and the
//! iptables chain named after it. What a backend will hold is described abstractly
//! ([`Placement`]: accept these ranges on these ports at this place, with restrict a drop of
//! every other non-loopback source after them), never as a backend's own syntax, so that this
//! crate does not name backends. The transformation is pure: the host is read once and every
//! variant (the plan, a hint's config) is judged from the same reading.

use std::collections::BTreeMap;

use cf_allowlist_backend::OWNER_TAG;
use ipnet::IpNet;

use crate::Host;
use crate::model::{
    Action, Base, Chain, Condition, Field, Origin, Rule, Table, Value, Values, Verdict,
};

/// The iptables chain our backend jumps to (its rules are ours, whatever they say).
const IPTABLES_CHAIN: &str = "CF-ALLOWLIST";

/// Where a backend's accepts sit in netfilter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// At the top of chain `chain` of table `inet table` (created as an input base chain with
    /// policy accept, priority 0, when missing).
    NftChain {
        /// The inet table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// At the top of the filter table's INPUT chain of iptables and ip6tables, in the legacy
    /// variant or the nf_tables one.
    IptablesInput {
        /// Whether the legacy variant.
        legacy: bool,
    },
    /// At the top of ufw's user input chains (`ufw-user-input`, `ufw6-user-input`), in
    /// whichever variant holds them; nowhere while ufw is not loaded.
    UfwUserInput,
}

/// What one backend will hold after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Where.
    pub place: Place,
    /// The ranges accepted.
    pub ranges: Vec<IpNet>,
    /// On these TCP ports.
    pub ports: Vec<u16>,
    /// Whether every other non-loopback source is dropped on those ports after the accepts.
    pub restrict: bool,
    /// Whether the backend keeps its rules where they are (its plan repairs nothing): our
    /// parts at this place stay in position and only match `ranges` from now on. Otherwise
    /// they are written anew at the top of the place, as the backends insert them.
    pub in_place: bool,
}

impl Host {
    /// This host with our parts removed and `placements` put in their places.
    pub fn planned(&self, placements: &[Placement]) -> Host {
        let kept: Vec<&Placement> = placements.iter().filter(|p| p.in_place).collect();
        let mut tables: Vec<Table> = self
            .tables
            .iter()
            .map(|table| without_ours(table, &kept))
            .collect();
        for placement in placements {
            // ufw's rules carry no mark the listing shows: kept in place, they are simply
            // left as they are.
            let kept_in_place = placement.in_place
                && (placement.place == Place::UfwUserInput
                    || holds_ours(&tables, &placement.place));
            if !kept_in_place {
                place(&mut tables, placement);
            }
        }
        Host {
            tables,
            unread: self.unread.clone(),
            outside_nf_tables: self.outside_nf_tables,
        }
    }

    /// Whether an iptables legacy filter table exists (where `auto` would write).
    pub fn has_legacy_filter(&self) -> bool {
        self.tables
            .iter()
            .any(|table| table.origin == Origin::IptablesLegacy && table.name == "filter")
    }
}

/// The origin of one iptables variant's tables.
fn iptables_origin(legacy: bool) -> Origin {
    if legacy {
        Origin::IptablesLegacy
    } else {
        Origin::IptablesNft
    }
}

impl Host {
    /// Whether the filter tables of one iptables variant hold anything that is not ours: a
    /// rule outside our chains, another user chain, or a base chain whose policy drops. The
    /// iptables backend's `variant = "auto"` writes where the host's own rules are, so its
    /// place is judged there (only the chains the analysis reads count: those on the input
    /// path).
    pub fn iptables_variant_in_use(&self, legacy: bool) -> bool {
        let origin = iptables_origin(legacy);
        self.tables
            .iter()
            .filter(|table| {
                table.origin == origin
                    && table.name == "filter"
                    && matches!(table.family.as_str(), "ip" | "ip6")
            })
            .flat_map(|table| table.chains.values())
            .filter(|chain| !chain.name.starts_with(IPTABLES_CHAIN))
            .any(|chain| match &chain.base {
                None => true,
                Some(base) => base.policy_drop || chain.rules.iter().any(|rule| !is_ours(rule)),
            })
    }
}

impl Host {
    /// Whether one iptables variant's filter tables hold our chain.
    pub fn iptables_chain_in(&self, legacy: bool) -> bool {
        let origin = iptables_origin(legacy);
        self.tables.iter().any(|table| {
            table.origin == origin
                && table.name == "filter"
                && table.chains.contains_key(IPTABLES_CHAIN)
        })
    }
}

fn is_ours(rule: &Rule) -> bool {
    rule.text.contains(OWNER_TAG)
        || matches!(&rule.action, Action::Verdict(Verdict::Jump(chain) | Verdict::Goto(chain)) if chain == IPTABLES_CHAIN)
}

/// Whether our parts in `chain` of `table` belong to `place`.
fn owns(place: &Place, table: &Table, chain: &str) -> bool {
    match place {
        Place::NftChain {
            table: name,
            chain: ours,
        } => {
            table.origin == Origin::Nft
                && table.family == "inet"
                && &table.name == name
                && chain == ours
        }
        Place::IptablesInput { legacy } => {
            let origin = if *legacy {
                Origin::IptablesLegacy
            } else {
                Origin::IptablesNft
            };
            table.origin == origin && table.name == "filter"
        }
        Place::UfwUserInput => false,
    }
}

/// Whether any of our parts remain at `place` (after [`without_ours`]).
fn holds_ours(tables: &[Table], place: &Place) -> bool {
    tables.iter().any(|table| {
        table
            .chains
            .values()
            .any(|chain| owns(place, table, &chain.name) && chain.rules.iter().any(is_ours))
    })
}

/// The table without our parts, except those of the `kept` placements, which stay in position
/// and match their placement's ranges.
fn without_ours(table: &Table, kept: &[&Placement]) -> Table {
    let mut table = table.clone();
    let keeper = |chain: &str, table: &Table| {
        kept.iter()
            .find(|placement| owns(&placement.place, table, chain))
            .copied()
    };
    if table.origin != Origin::Nft && keeper(IPTABLES_CHAIN, &table).is_none() {
        table.chains.remove(IPTABLES_CHAIN);
    }
    let snapshot = table.clone();
    for chain in table.chains.values_mut() {
        match keeper(&chain.name, &snapshot) {
            Some(placement) => {
                for rule in chain.rules.iter_mut().filter(|rule| is_ours(rule)) {
                    if rule.action == Action::Verdict(Verdict::Accept) {
                        with_sources(rule, &placement.ranges);
                    }
                }
            }
            None => chain.rules.retain(|rule| !is_ours(rule)),
        }
    }
    table
}

/// Makes an accept of ours match `ranges` (what its set will hold after the plan).
fn with_sources(rule: &mut Rule, ranges: &[IpNet]) {
    for condition in &mut rule.conditions {
        if let Condition::Compare {
            field: Field::Source,
            negate: false,
            values,
            ..
        } = condition
        {
            *values = Values::new(ranges.iter().copied().map(Value::Net).collect());
        }
    }
}

fn compare(field: Field, values: Vec<Value>, negate: bool, text: String) -> Condition {
    Condition::Compare {
        field,
        negate,
        values: Values::new(values),
        family: None,
        text,
    }
}

/// Our rules for one placement, in the order a backend writes them: the accepts, then with
/// restrict the drop.
fn rules(placement: &Placement) -> Vec<Rule> {
    let ports: Vec<Value> = placement
        .ports
        .iter()
        .map(|port| Value::Ports(*port, *port))
        .collect();
    let port_text = placement
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let tcp = || {
        compare(
            Field::Protocol,
            vec![Value::Word("tcp".into())],
            false,
            "tcp".into(),
        )
    };
    let dport = || {
        compare(
            Field::DestinationPort,
            ports.clone(),
            false,
            format!("dport {port_text}"),
        )
    };
    let mut rules = vec![Rule {
        conditions: vec![
            compare(
                Field::Source,
                placement.ranges.iter().copied().map(Value::Net).collect(),
                false,
                "saddr @listed".into(),
            ),
            tcp(),
            dport(),
        ],
        action: Action::Verdict(Verdict::Accept),
        text: format!("(planned) accept the listed ranges on tcp {port_text} # {OWNER_TAG}"),
        opaque: false,
    }];
    if placement.restrict {
        rules.push(Rule {
            conditions: vec![
                compare(
                    Field::InputInterface,
                    vec![Value::Word("lo".into())],
                    true,
                    "iifname != lo".into(),
                ),
                tcp(),
                dport(),
            ],
            action: Action::Verdict(Verdict::Drop),
            text: format!(
                "(planned) drop every other source on tcp {port_text} # {OWNER_TAG} restrict"
            ),
            opaque: false,
        });
    }
    rules
}

fn input_base(policy_drop: bool) -> Base {
    Base {
        hook: "input".into(),
        priority: 0,
        policy_drop,
        device: None,
    }
}

fn insert_top(chain: &mut Chain, placement: &Placement) {
    let mut rules = rules(placement);
    rules.append(&mut chain.rules);
    chain.rules = rules;
}

fn place(tables: &mut Vec<Table>, placement: &Placement) {
    match &placement.place {
        Place::NftChain { table, chain } => {
            let index = match tables
                .iter()
                .position(|t| t.family == "inet" && &t.name == table && t.origin == Origin::Nft)
            {
                Some(index) => index,
                None => {
                    tables.push(Table {
                        family: "inet".into(),
                        name: table.clone(),
                        origin: Origin::Nft,
                        chains: BTreeMap::new(),
                    });
                    tables.len() - 1
                }
            };
            let chain = tables[index]
                .chains
                .entry(chain.clone())
                .or_insert_with(|| Chain {
                    name: chain.clone(),
                    base: Some(input_base(false)),
                    rules: Vec::new(),
                });
            insert_top(chain, placement);
        }
        Place::IptablesInput { legacy } => {
            let origin = if *legacy {
                Origin::IptablesLegacy
            } else {
                Origin::IptablesNft
            };
            for family in ["ip", "ip6"] {
                let index = match tables
                    .iter()
                    .position(|t| t.family == family && t.name == "filter" && t.origin == origin)
                {
                    Some(index) => index,
                    None => {
                        tables.push(Table {
                            family: family.into(),
                            name: "filter".into(),
                            origin,
                            chains: BTreeMap::new(),
                        });
                        tables.len() - 1
                    }
                };
                let chain = tables[index]
                    .chains
                    .entry("INPUT".into())
                    .or_insert_with(|| Chain {
                        name: "INPUT".into(),
                        base: Some(input_base(false)),
                        rules: Vec::new(),
                    });
                insert_top(chain, placement);
            }
        }
        Place::UfwUserInput => {
            for table in tables.iter_mut().filter(|t| t.origin != Origin::Nft) {
                for name in ["ufw-user-input", "ufw6-user-input"] {
                    if let Some(chain) = table.chains.get_mut(name) {
                        insert_top(chain, placement);
                    }
                }
            }
        }
    }
}
