//! memhost's standard governance policy.
//!
//! The namespace's policy configuration is one of three literal rules:
//!
//! | rule                  | meaning                                                        |
//! |-----------------------|----------------------------------------------------------------|
//! | `allow`               | every action runs at once                                      |
//! | `single:<agent-type>` | one approval from an agent of that type (not the requester)    |
//! | `consensus:<n>`       | `n` approvals from distinct agents of any type (1 ≤ n ≤ 100)   |
//!
//! Anything else is a configuration error, which the host turns into a
//! denial: a namespace with a broken policy fails closed.

use memhost_sdk::{Action, Decision, Error, Policy, Requirement, Result};

/// The most approvals `consensus:<n>` may ask for.
pub const MAX_CONSENSUS: u32 = 100;

/// A parsed policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `allow`
    Allow,
    /// `single:<agent-type>`
    Single(String),
    /// `consensus:<n>`
    Consensus(u32),
}

impl Rule {
    /// Parse the namespace's policy configuration.
    pub fn parse(config: &str) -> Result<Rule> {
        let config = config.trim();
        let invalid = |why: &str| {
            Error::Config(format!(
                "policy \"{config}\" is not valid ({why}); expected allow, single:<agent-type> or consensus:<n>"
            ))
        };
        if config == "allow" {
            return Ok(Rule::Allow);
        }
        if let Some(agent_type) = config.strip_prefix("single:") {
            let ok = !agent_type.is_empty()
                && agent_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            return if ok {
                Ok(Rule::Single(agent_type.to_string()))
            } else {
                Err(invalid("the agent type must be letters, digits, - or _"))
            };
        }
        if let Some(n) = config.strip_prefix("consensus:") {
            return match n.parse::<u32>() {
                Ok(n) if (1..=MAX_CONSENSUS).contains(&n) => Ok(Rule::Consensus(n)),
                _ => Err(invalid("n must be a whole number from 1 to 100")),
            };
        }
        Err(invalid("unknown rule"))
    }
}

/// The standard policy plugin.
pub struct StandardPolicy;

impl Policy for StandardPolicy {
    fn new() -> Result<Self> {
        Ok(StandardPolicy)
    }

    fn evaluate(&self, action: &Action) -> Result<Decision> {
        Ok(match Rule::parse(&action.policy_config)? {
            Rule::Allow => Decision::Allow,
            Rule::Single(agent_type) => Decision::RequireApproval(Requirement::approvals_from(
                1,
                [agent_type.clone()],
                format!("one approval from an agent of type {agent_type}"),
            )),
            Rule::Consensus(n) => Decision::RequireApproval(Requirement::approvals(
                n,
                if n == 1 {
                    "one approval from another agent".to_string()
                } else {
                    format!("{n} approvals from distinct agents")
                },
            )),
        })
    }
}

memhost_sdk::register_policy!(StandardPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_rules() {
        assert_eq!(Rule::parse("allow").unwrap(), Rule::Allow);
        assert_eq!(
            Rule::parse("single:reviewer").unwrap(),
            Rule::Single("reviewer".into())
        );
        assert_eq!(Rule::parse("consensus:3").unwrap(), Rule::Consensus(3));
    }

    #[test]
    fn refuses_anything_else_naming_the_rule() {
        for bad in [
            "",
            "deny",
            "single:",
            "single:a b",
            "consensus:0",
            "consensus:x",
            "consensus:101",
        ] {
            let err = Rule::parse(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(bad.trim())),
                "{bad}: {err:?}"
            );
        }
    }
}
