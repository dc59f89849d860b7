//! restrict and the admin's own allows (issue 17, scenario 5).
//!
//! restrict's drop closes the managed ports to every source we do not list. An admin's rule
//! that accepts a managed port from chosen sources ("this partner may reach 443") and that the
//! drop precedes would be cut without a word. Every backend keeps such a rule working instead:
//! where rules are a first-match list that we share with the admin (nftables' chain, ufw's
//! rules), the drop is placed after the admin's allows; where our rules live in a chain of
//! their own (iptables), the chain lets the allowed sources return before its drop. Where
//! neither can keep the allow (it comes after a rule that opens the port to everyone, which the
//! drop must precede), the backend warns, naming both rules. This module holds the decision
//! that the first-match backends share, so that they decide alike.

/// What a rule of somebody else's, in the list our drop is placed in, means for restrict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts a managed port from chosen sources: the drop must not precede it.
    Keep,
    /// Accepts a managed port from every source: the drop must precede it (that is what
    /// restrict is for).
    Open,
    /// Anything else: the drop may come before or after it.
    Other,
}

impl Role {
    /// The role of an accepting rule from what it matches: `specific_source` when it names
    /// sources (not everywhere, not negated), `ports` the destination ports it accepts (`None`:
    /// every port), `managed` the ports restrict closes. A rule that does not accept is
    /// [`Role::Other`].
    pub fn of_accept(
        accepts: bool,
        specific_source: bool,
        ports: Option<&[u16]>,
        managed: &[u16],
    ) -> Role {
        let touches = ports.is_none_or(|ports| ports.iter().any(|port| managed.contains(port)));
        match (accepts && touches, specific_source, ports) {
            (false, _, _) => Role::Other,
            (true, true, _) => Role::Keep,
            // Accepting every port from everyone is not about the managed ports (a rule such as
            // `iif lo accept` or `ct state established accept` usually has no port either).
            (true, false, None) => Role::Other,
            (true, false, Some(_)) => Role::Open,
        }
    }
}

/// Where restrict's drop goes among rules of somebody else's that follow our accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The index of the rule the drop must follow directly; `None`: right after our accepts.
    pub after: Option<usize>,
    /// The first rule that opens a managed port to everyone: the drop must precede it.
    pub before: Option<usize>,
    /// The allows the drop cannot keep: they follow [`Placement::before`].
    pub cut: Vec<usize>,
}

/// Places the drop among `roles`, the rules that follow our accepts, in order: after the last
/// allow to keep that precedes the first rule opening a managed port to everyone.
pub fn place_drop(roles: &[Role]) -> Placement {
    let before = roles.iter().position(|role| *role == Role::Open);
    let open_at = before.unwrap_or(roles.len());
    Placement {
        after: roles[..open_at]
            .iter()
            .rposition(|role| *role == Role::Keep),
        before,
        cut: (open_at..roles.len())
            .filter(|index| roles[*index] == Role::Keep)
            .collect(),
    }
}

/// Whether a drop at index `drop_at` of `roles` (between the rules `drop_at - 1` and
/// `drop_at`: the rules before it are `roles[..drop_at]`) is where [`place_drop`] allows it.
pub fn drop_in_place(roles: &[Role], drop_at: usize) -> bool {
    let placement = place_drop(roles);
    placement.after.is_none_or(|after| after < drop_at)
        && placement.before.is_none_or(|before| drop_at <= before)
}

/// The warning for an allow the drop cannot keep.
pub fn cut_warning(backend: &str, kept: &str, open: &str) -> String {
    format!(
        "{backend}: restrict cuts the admin's allow {kept}: it follows {open}, which opens a \
         managed port to every source, so restrict's drop must come first; move the allow above \
         that rule (it would never be reached for those ports without restrict either)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::{Keep, Open, Other};

    #[test]
    fn the_drop_follows_the_last_allow_before_the_first_open_rule() {
        assert_eq!(
            place_drop(&[Other, Keep, Other, Keep, Open, Keep]),
            Placement {
                after: Some(3),
                before: Some(4),
                cut: vec![5]
            }
        );
        assert_eq!(
            place_drop(&[Other, Open]),
            Placement {
                after: None,
                before: Some(1),
                cut: vec![]
            }
        );
        assert_eq!(
            place_drop(&[]),
            Placement {
                after: None,
                before: None,
                cut: vec![]
            }
        );
        assert!(drop_in_place(&[Keep, Open], 1));
        assert!(!drop_in_place(&[Keep, Open], 0));
        assert!(!drop_in_place(&[Keep, Open], 2));
        assert!(drop_in_place(&[Other, Other], 0));
    }

    #[test]
    fn roles_from_what_a_rule_accepts() {
        let managed = [80, 443];
        assert_eq!(Role::of_accept(true, true, Some(&[443]), &managed), Keep);
        assert_eq!(Role::of_accept(true, true, None, &managed), Keep);
        assert_eq!(Role::of_accept(true, true, Some(&[22]), &managed), Other);
        assert_eq!(
            Role::of_accept(true, false, Some(&[443, 8080]), &managed),
            Open
        );
        assert_eq!(Role::of_accept(true, false, None, &managed), Other);
        assert_eq!(Role::of_accept(false, true, Some(&[443]), &managed), Other);
    }
}
