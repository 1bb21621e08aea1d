//! Example custom policy: what the redactor found decides what happens.
//!
//! | labels on the action           | decision                                          |
//! |--------------------------------|---------------------------------------------------|
//! | any `secret`                   | deny: secrets never go into memory                |
//! | personal data (`email`, `phone`, `card`, `iban`, `ssn`) | one approval from a `security` agent |
//! | anything else                  | the namespace's own rule, as the standard policy reads it (`allow` when unset) |
//!
//! The approver type can be changed with the granted config key
//! `approver_type`.

use memhost_sdk::{Action, ActionKind, Decision, Policy, Requirement, Result};

/// Labels that count as personal data.
pub const PERSONAL: &[&str] = &["email", "phone", "card", "iban", "ssn"];

/// The policy.
pub struct SensitiveData {
    approver_type: String,
}

impl SensitiveData {
    /// The decision for `action`.
    pub fn decide(&self, action: &Action) -> Decision {
        let writes = matches!(action.kind, ActionKind::Store | ActionKind::Update);
        if writes && action.labels.iter().any(|l| l == "secret") {
            return Decision::Deny(
                "content contains a secret (API key, private key or token)".into(),
            );
        }
        if writes && action.labels.iter().any(|l| PERSONAL.contains(&l.as_str())) {
            return Decision::RequireApproval(Requirement::approvals_from(
                1,
                [self.approver_type.clone()],
                format!(
                    "personal data needs one approval from a {} agent",
                    self.approver_type
                ),
            ));
        }
        match action.policy_config.trim() {
            "" | "allow" => Decision::Allow,
            other => Decision::Deny(format!(
                "this example policy only understands allow, not \"{other}\""
            )),
        }
    }
}

impl Policy for SensitiveData {
    fn new() -> Result<Self> {
        Ok(SensitiveData {
            approver_type: memhost_sdk::config("approver_type")
                .unwrap_or_else(|| "security".into()),
        })
    }

    fn evaluate(&self, action: &Action) -> Result<Decision> {
        Ok(self.decide(action))
    }
}

memhost_sdk::register_policy!(SensitiveData);

#[cfg(test)]
mod tests {
    use super::*;
    use memhost_sdk::Actor;

    fn action(labels: &[&str]) -> Action {
        Action {
            kind: ActionKind::Store,
            actor: Actor {
                agent_id: "a".into(),
                agent_type: "assistant".into(),
            },
            namespace: "team".into(),
            target_id: None,
            tags: vec![],
            labels: labels.iter().map(|s| s.to_string()).collect(),
            policy_config: "allow".into(),
        }
    }

    #[test]
    fn secrets_denied_pii_needs_security_rest_allowed() {
        let p = SensitiveData {
            approver_type: "security".into(),
        };
        assert!(matches!(
            p.decide(&action(&["secret", "email"])),
            Decision::Deny(_)
        ));
        match p.decide(&action(&["email"])) {
            Decision::RequireApproval(r) => assert_eq!(r.approver_types, ["security"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.decide(&action(&["keyword"])), Decision::Allow));
    }
}
