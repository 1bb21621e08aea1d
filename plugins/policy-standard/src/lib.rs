//! memhost's standard governance policy.
//!
//! The namespace's policy configuration is one rule for every action, or a
//! rule per action kind:
//!
//! | rule                  | meaning                                                        |
//! |-----------------------|----------------------------------------------------------------|
//! | `allow`               | the action runs at once                                        |
//! | `deny`                | the action is refused                                          |
//! | `single:<agent-type>` | one approval from an agent of that type (not the requester)    |
//! | `consensus:<n>`       | `n` approvals from distinct agents of any type (1 ≤ n ≤ 100)   |
//!
//! Per kind: `store=allow; forget=single:human; configure=consensus:2;
//! *=single:reviewer`. Kinds are `store`, `update`, `forget`, `purge`
//! (deleting the namespace) and `configure` (its settings, policy and
//! reindex); `*` is every kind not named, and must be given unless every
//! kind is: a forgotten kind — `configure` above all, which could replace
//! the policy itself — is never allowed by omission.
//!
//! Anything else is a configuration error naming the bad part, which the
//! host refuses when the namespace is created or changed, and turns into a
//! denial should it ever meet one: a broken policy fails closed.

use memhost_sdk::{Action, ActionKind, Decision, Error, Policy, Requirement, Result};

/// The most approvals `consensus:<n>` may ask for.
pub const MAX_CONSENSUS: u32 = 100;

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `allow`
    Allow,
    /// `deny`
    Deny,
    /// `single:<agent-type>`
    Single(String),
    /// `consensus:<n>`
    Consensus(u32),
}

/// The rules of a namespace: one per kind, and one for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `(kind, rule)` for the kinds named.
    pub by_kind: Vec<(&'static str, Rule)>,
    /// For every kind not named (`*`, or a bare rule).
    pub rest: Rule,
}

/// The kinds a per-kind rule may name, as the configuration spells them.
pub const KINDS: &[&str] = &["store", "update", "forget", "purge", "configure"];

fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Store => "store",
        ActionKind::Update => "update",
        ActionKind::Forget => "forget",
        ActionKind::Purge => "purge",
        ActionKind::Configure => "configure",
    }
}

fn config_error(config: &str, why: String) -> Error {
    Error::Config(format!(
        "policy \"{config}\" is not valid ({why}); expected allow, deny, single:<agent-type>, consensus:<n>, or kind=rule pairs separated by ';' (kinds: store, update, forget, purge, configure, *)"
    ))
}

impl Rule {
    /// Parse one rule; `Err` says what is wrong with it.
    pub fn parse_one(text: &str) -> std::result::Result<Rule, String> {
        let text = text.trim();
        match text {
            "allow" => return Ok(Rule::Allow),
            "deny" => return Ok(Rule::Deny),
            _ => {}
        }
        if let Some(agent_type) = text.strip_prefix("single:") {
            let ok = !agent_type.is_empty()
                && agent_type.len() <= 64
                && agent_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            return if ok {
                Ok(Rule::Single(agent_type.to_string()))
            } else {
                Err(format!(
                    "\"{text}\": the agent type must be 1-64 letters, digits, '.', '-' or '_'"
                ))
            };
        }
        if let Some(n) = text.strip_prefix("consensus:") {
            return match n.parse::<u32>() {
                Ok(n) if (1..=MAX_CONSENSUS).contains(&n) => Ok(Rule::Consensus(n)),
                _ => Err(format!(
                    "\"{text}\": n must be a whole number from 1 to {MAX_CONSENSUS}"
                )),
            };
        }
        Err(format!("\"{text}\" is not a rule"))
    }

    /// Parse a whole configuration that is a single rule (kept for plugins
    /// built on this crate).
    pub fn parse(config: &str) -> Result<Rule> {
        Rule::parse_one(config).map_err(|why| config_error(config.trim(), why))
    }

    fn decide(&self) -> Decision {
        match self {
            Rule::Allow => Decision::Allow,
            Rule::Deny => Decision::Deny("the namespace's policy does not allow this".into()),
            Rule::Single(agent_type) => Decision::RequireApproval(Requirement::approvals_from(
                1,
                [agent_type.clone()],
                format!("one approval from an agent of type {agent_type}"),
            )),
            Rule::Consensus(n) => Decision::RequireApproval(Requirement::approvals(
                *n,
                if *n == 1 {
                    "one approval from another agent".to_string()
                } else {
                    format!("{n} approvals from distinct agents")
                },
            )),
        }
    }
}

impl Rules {
    /// Parse the namespace's policy configuration.
    pub fn parse(config: &str) -> Result<Rules> {
        let config = config.trim();
        if !config.contains('=') {
            return Ok(Rules {
                by_kind: Vec::new(),
                rest: Rule::parse(config)?,
            });
        }
        let mut by_kind: Vec<(&'static str, Rule)> = Vec::new();
        let mut rest = None;
        for part in config.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, rule) = part
                .split_once('=')
                .ok_or_else(|| config_error(config, format!("\"{part}\" is not kind=rule")))?;
            let kind = kind.trim();
            let rule = Rule::parse_one(rule).map_err(|why| config_error(config, why))?;
            if kind == "*" {
                if rest.replace(rule).is_some() {
                    return Err(config_error(config, "\"*\" is given twice".into()));
                }
                continue;
            }
            let Some(known) = KINDS.iter().find(|k| **k == kind) else {
                return Err(config_error(
                    config,
                    format!("\"{kind}\" is not an action kind"),
                ));
            };
            if by_kind.iter().any(|(k, _)| k == known) {
                return Err(config_error(config, format!("\"{kind}\" is given twice")));
            }
            by_kind.push((known, rule));
        }
        let rest = match rest {
            Some(rule) => rule,
            None if by_kind.len() == KINDS.len() => Rule::Deny,
            None => {
                let missing: Vec<&str> = KINDS
                    .iter()
                    .filter(|k| !by_kind.iter().any(|(named, _)| named == *k))
                    .copied()
                    .collect();
                return Err(config_error(
                    config,
                    format!(
                        "{} not named and there is no *=rule for them",
                        missing.join(", ")
                    ),
                ));
            }
        };
        Ok(Rules { by_kind, rest })
    }

    /// The rule for `kind`.
    pub fn for_kind(&self, kind: ActionKind) -> &Rule {
        let name = kind_name(kind);
        self.by_kind
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(&self.rest, |(_, r)| r)
    }
}

/// The standard policy plugin.
pub struct StandardPolicy;

impl Policy for StandardPolicy {
    fn new() -> Result<Self> {
        Ok(StandardPolicy)
    }

    fn evaluate(&self, action: &Action) -> Result<Decision> {
        Ok(Rules::parse(&action.policy_config)?
            .for_kind(action.kind)
            .decide())
    }
}

memhost_sdk::register_policy!(StandardPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use memhost_sdk::{Actor, Outcome, Vote, standard_tally};

    fn action(kind: ActionKind, config: &str) -> Action {
        Action {
            kind,
            actor: Actor {
                agent_id: "bot".into(),
                agent_type: "assistant".into(),
            },
            namespace: "team".into(),
            target_id: None,
            tags: vec![],
            labels: vec![],
            policy_config: config.into(),
        }
    }

    #[test]
    fn parses_the_rules() {
        assert_eq!(Rule::parse("allow").unwrap(), Rule::Allow);
        assert_eq!(Rule::parse("deny").unwrap(), Rule::Deny);
        assert_eq!(
            Rule::parse("single:reviewer").unwrap(),
            Rule::Single("reviewer".into())
        );
        assert_eq!(Rule::parse("consensus:3").unwrap(), Rule::Consensus(3));
    }

    #[test]
    fn a_bare_rule_applies_to_every_kind() {
        let p = StandardPolicy;
        for kind in [
            ActionKind::Store,
            ActionKind::Update,
            ActionKind::Forget,
            ActionKind::Purge,
            ActionKind::Configure,
        ] {
            match p.evaluate(&action(kind, "consensus:2")).unwrap() {
                Decision::RequireApproval(r) => assert_eq!(r.approvals_needed, 2),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn per_kind_rules_pick_the_kind_then_star_then_allow() {
        let p = StandardPolicy;
        let config = "store=allow; forget=single:human; configure=consensus:2; *=single:reviewer";
        assert!(matches!(
            p.evaluate(&action(ActionKind::Store, config)).unwrap(),
            Decision::Allow
        ));
        match p.evaluate(&action(ActionKind::Forget, config)).unwrap() {
            Decision::RequireApproval(r) => assert_eq!(r.approver_types, ["human"]),
            other => panic!("{other:?}"),
        }
        match p.evaluate(&action(ActionKind::Configure, config)).unwrap() {
            Decision::RequireApproval(r) => {
                assert_eq!(r.approvals_needed, 2);
                assert!(r.approver_types.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match p.evaluate(&action(ActionKind::Update, config)).unwrap() {
            Decision::RequireApproval(r) => assert_eq!(r.approver_types, ["reviewer"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.evaluate(&action(ActionKind::Store, "purge=deny; *=allow"))
                .unwrap(),
            Decision::Allow
        ));
        assert!(matches!(
            p.evaluate(&action(ActionKind::Purge, "purge=deny; *=allow"))
                .unwrap(),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn refuses_anything_else_naming_the_bad_part() {
        for (bad, part) in [
            ("", "\"\""),
            ("maybe", "maybe"),
            ("single:", "single:"),
            ("single:a b", "single:a b"),
            ("consensus:0", "consensus:0"),
            ("consensus:x", "consensus:x"),
            ("consensus:101", "consensus:101"),
            (
                "store=allow; delete=deny",
                "\"delete\" is not an action kind",
            ),
            ("store=allow; store=deny", "\"store\" is given twice"),
            ("store=allow; forget", "\"forget\" is not kind=rule"),
            ("store=often", "\"often\" is not a rule"),
            // Nothing is allowed by omission.
            (
                "forget=single:human",
                "store, update, purge, configure not named",
            ),
        ] {
            let err = Rules::parse(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(part)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn votes_are_counted_against_the_kind_rule() {
        let p = StandardPolicy;
        let vote = |id: &str, t: &str, approve: bool| Vote {
            voter: Actor {
                agent_id: id.into(),
                agent_type: t.into(),
            },
            approve,
            comment: None,
        };
        let a = action(ActionKind::Forget, "forget=single:human; *=allow");
        assert!(matches!(
            p.tally(&a, &[vote("r", "reviewer", true)]).unwrap(),
            Outcome::Pending(1)
        ));
        assert!(matches!(
            p.tally(&a, &[vote("ann", "human", true)]).unwrap(),
            Outcome::Approved
        ));
        let Decision::RequireApproval(req) = p.evaluate(&a).unwrap() else {
            panic!("forget needs approval")
        };
        assert!(matches!(
            standard_tally(&req, &[vote("ann", "human", false)]),
            Outcome::Rejected(_)
        ));
    }
}
