//! Following one packet through one base chain, and through every base chain on its path.
//!
//! A walk through a chain collects every way it can end: accepted, dropped (by a rule or the
//! policy), or something the analysis does not follow. A rule that certainly matches ends
//! the walk (unless its verdict continues); one that may match adds its verdict's ends *and*
//! lets the walk go on, remembering the doubt. Since the packet is fixed and nothing it meets
//! is modelled as changing it, this linear walk sees every reachable end without enumerating
//! paths.

use crate::model::{Action, Chain, Packet, Rule, Table, Tri, Verdict};

/// Jumps deeper than this are not followed (the kernel refuses loops; this is a guard).
const MAX_DEPTH: usize = 64;

/// One way a walk can end.
#[derive(Debug, Clone)]
pub enum End {
    /// Accepted by this base chain.
    Accept,
    /// Dropped or rejected.
    Drop {
        /// The chain holding the rule (or the base chain, for its policy).
        chain: String,
        /// The rule, when not the policy.
        rule: Option<String>,
        /// Whether the base chain's policy dropped it.
        policy: bool,
    },
    /// Something the analysis does not follow happened, and what.
    Unfollowed(String),
    /// Returned from the chain (fell off its end or hit `return`).
    Return,
}

/// An end with the doubts (rules that only may have matched) on the way to it.
#[derive(Debug, Clone)]
pub struct Ending {
    /// How it ended.
    pub end: End,
    /// Why this end may not be reached, for each uncertain rule passed on the way.
    pub doubts: Vec<String>,
    /// Whether the path to it took a rule that only may match as matching. The one path that
    /// takes none (every unreadable match assumed not to hold, as is usual for the narrow
    /// matches the analysis cannot read) names the blocker when every path drops.
    pub assumed: bool,
}

/// Where a walk stands: the doubts collected and whether a maybe was taken as a match.
#[derive(Debug, Clone, Default)]
struct Path {
    doubts: Vec<String>,
    assumed: bool,
}

impl Path {
    fn doubting(&self, doubt: String, assumed: bool) -> Path {
        let mut path = self.clone();
        if !path.doubts.contains(&doubt) {
            path.doubts.push(doubt);
        }
        path.assumed |= assumed;
        path
    }

    /// Joins two ways of reaching the same next rule.
    fn merge(&mut self, other: Path) {
        for doubt in other.doubts {
            if !self.doubts.contains(&doubt) {
                self.doubts.push(doubt);
            }
        }
        self.assumed &= other.assumed;
    }

    fn end(&self, end: End) -> Ending {
        Ending {
            end,
            doubts: self.doubts.clone(),
            assumed: self.assumed,
        }
    }
}

/// What one base chain does with the packet.
#[derive(Debug, Clone)]
pub enum ChainFate {
    /// It accepts the packet (and so does not stop it).
    Accepted,
    /// It certainly drops the packet.
    Dropped {
        /// The chain holding the rule.
        chain: String,
        /// The rule, or `None` for the policy.
        rule: Option<String>,
        /// Whether the policy dropped it.
        policy: bool,
    },
    /// It may drop the packet, or does something the analysis cannot follow.
    Unsure(String),
}

/// Evaluates `base` (a base chain of `table`) for `packet`.
pub fn base_chain(table: &Table, base: &Chain, packet: &Packet) -> ChainFate {
    let policy_drop = base.base.as_ref().is_some_and(|base| base.policy_drop);
    let endings: Vec<Ending> = walk(table, base, packet, Path::default(), 0)
        .into_iter()
        .map(|ending| match ending.end {
            End::Return if policy_drop => Ending {
                end: End::Drop {
                    chain: base.name.clone(),
                    rule: None,
                    policy: true,
                },
                ..ending
            },
            End::Return => Ending {
                end: End::Accept,
                ..ending
            },
            _ => ending,
        })
        .collect();
    let all_drop = endings
        .iter()
        .all(|ending| matches!(ending.end, End::Drop { .. }));
    if all_drop {
        // Every way through drops it; name the drop on the path that assumed no unreadable
        // match holds.
        let chosen = endings
            .iter()
            .find(|ending| !ending.assumed)
            .or_else(|| endings.first());
        if let Some(Ending {
            end:
                End::Drop {
                    chain,
                    rule,
                    policy,
                },
            ..
        }) = chosen
        {
            return ChainFate::Dropped {
                chain: chain.clone(),
                rule: rule.clone(),
                policy: *policy,
            };
        }
    }
    let mut reasons = Vec::new();
    for ending in &endings {
        let doubt = ending
            .doubts
            .first()
            .map(|doubt| format!(" ({doubt})"))
            .unwrap_or_default();
        let reason = match &ending.end {
            End::Drop {
                chain,
                rule: Some(rule),
                ..
            } => format!("`{rule}` in {chain} may drop it{doubt}"),
            End::Drop { chain, .. } => format!("the policy drop of {chain} may apply{doubt}"),
            End::Unfollowed(what) => format!("{what}{doubt}"),
            End::Accept | End::Return => continue,
        };
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    if reasons.is_empty() {
        ChainFate::Accepted
    } else {
        ChainFate::Unsure(reasons.join("; "))
    }
}

fn rule_matches(rule: &Rule, packet: &Packet) -> Tri {
    let mut answer = Tri::Yes;
    for condition in &rule.conditions {
        match condition.matches(packet) {
            Tri::No => return Tri::No,
            Tri::Maybe(why) if answer == Tri::Yes => answer = Tri::Maybe(why),
            _ => {}
        }
    }
    answer
}

fn walk(
    table: &Table,
    chain: &Chain,
    packet: &Packet,
    mut path: Path,
    depth: usize,
) -> Vec<Ending> {
    let mut endings = Vec::new();
    for rule in &chain.rules {
        let (arms, falls_through): (Vec<(Tri, &Verdict)>, Tri) = match &rule.action {
            Action::Verdict(verdict) => match rule_matches(rule, packet) {
                Tri::No => continue,
                Tri::Yes => (vec![(Tri::Yes, verdict)], Tri::No),
                Tri::Maybe(why) => (vec![(Tri::Maybe(why.clone()), verdict)], Tri::Maybe(why)),
            },
            Action::Map(entries) => {
                let base = rule_matches(rule, packet);
                if base == Tri::No {
                    continue;
                }
                let mut arms = Vec::new();
                let mut any_yes = false;
                let mut maybe_why = None;
                for (condition, verdict) in entries {
                    let answer = match (&base, condition.matches(packet)) {
                        (_, Tri::No) | (Tri::No, _) => continue,
                        (Tri::Yes, Tri::Yes) => Tri::Yes,
                        (Tri::Maybe(why), _) => Tri::Maybe(why.clone()),
                        (_, Tri::Maybe(why)) => Tri::Maybe(why),
                    };
                    if answer == Tri::Yes {
                        any_yes = true;
                        arms = vec![(Tri::Yes, verdict)];
                        break;
                    }
                    if let Tri::Maybe(why) = &answer {
                        maybe_why.get_or_insert_with(|| why.clone());
                    }
                    arms.push((answer, verdict));
                }
                let falls_through = match (any_yes, maybe_why) {
                    (true, _) => Tri::No,
                    (false, Some(why)) => Tri::Maybe(why),
                    (false, None) => Tri::Yes,
                };
                (arms, falls_through)
            }
        };
        let mut continuing: Option<Path> = match &falls_through {
            Tri::Yes => Some(path.clone()),
            Tri::Maybe(why) => Some(path.doubting(format!("`{}`: {why}", rule.text), false)),
            Tri::No => None,
        };
        for (answer, verdict) in arms {
            let arm_path = match &answer {
                Tri::Maybe(why) => path.doubting(format!("`{}`: {why}", rule.text), true),
                _ => path.clone(),
            };
            let (ends, continues) = act(table, chain, rule, verdict, packet, arm_path, depth);
            endings.extend(ends);
            if let Some(more) = continues {
                match &mut continuing {
                    Some(next) => next.merge(more),
                    None => continuing = Some(more),
                }
            }
        }
        match continuing {
            Some(next) => path = next,
            None => return endings,
        }
    }
    endings.push(path.end(End::Return));
    endings
}

/// Applies `verdict` (of `rule` in `chain`); returns the endings it produces and, if the walk
/// may continue with the next rule, the doubts it continues with.
fn act(
    table: &Table,
    chain: &Chain,
    rule: &Rule,
    verdict: &Verdict,
    packet: &Packet,
    path: Path,
    depth: usize,
) -> (Vec<Ending>, Option<Path>) {
    let end = |end| (vec![path.end(end)], None);
    match verdict {
        Verdict::Accept => end(End::Accept),
        Verdict::Drop | Verdict::Reject => end(End::Drop {
            chain: chain.name.clone(),
            rule: Some(rule.text.clone()),
            policy: false,
        }),
        Verdict::Return => end(End::Return),
        Verdict::Continue => (Vec::new(), Some(path)),
        Verdict::Unfollowed(what) => end(End::Unfollowed(format!(
            "`{}` in {} does `{what}`, which the analysis does not follow",
            rule.text, chain.name
        ))),
        Verdict::Jump(target) | Verdict::Goto(target) => {
            let Some(next) = table.chains.get(target) else {
                return end(End::Unfollowed(format!(
                    "`{}` in {} goes to chain {target}, which is not listed",
                    rule.text, chain.name
                )));
            };
            if depth >= MAX_DEPTH {
                return end(End::Unfollowed(format!(
                    "chains nested deeper than {MAX_DEPTH} at {target}"
                )));
            }
            let sub = walk(table, next, packet, path.clone(), depth + 1);
            if matches!(verdict, Verdict::Goto(_)) {
                // The target's end returns from *this* chain.
                return (sub, None);
            }
            let mut endings = Vec::new();
            let mut continues: Option<Path> = None;
            for ending in sub {
                if matches!(ending.end, End::Return) {
                    let returned = Path {
                        doubts: ending.doubts,
                        assumed: ending.assumed,
                    };
                    match &mut continues {
                        Some(next) => next.merge(returned),
                        None => continues = Some(returned),
                    }
                } else {
                    endings.push(ending);
                }
            }
            (endings, continues)
        }
    }
}
