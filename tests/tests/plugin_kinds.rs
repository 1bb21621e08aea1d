//! Every kind works end to end through the host's typed facades, with the
//! plugins we ship and the examples — including one written in Python
//! against the same WIT, proving the contract (not our SDK) is the interface.

use crate::common::*;
use memhost::plugins::{
    Action, ActionKind, Actor, Decision, Grant, Outcome, PluginSettings, Vote, apply_findings,
};

fn action(policy_config: &str, labels: &[&str]) -> Action {
    Action {
        kind: ActionKind::Store,
        actor: Actor {
            agent_id: "writer-1".into(),
            agent_type: "assistant".into(),
        },
        namespace: "team-a".into(),
        target_id: None,
        tags: vec!["notes".into()],
        labels: labels.iter().map(|s| s.to_string()).collect(),
        policy_config: policy_config.into(),
    }
}

fn vote(id: &str, agent_type: &str, approve: bool) -> Vote {
    Vote {
        voter: Actor {
            agent_id: id.into(),
            agent_type: agent_type.into(),
        },
        approve,
        comment: None,
    }
}

#[test]
fn the_standard_policy_reads_allow_single_and_consensus() {
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![staged("policy-standard")]).unwrap();
    let policy = reg.snapshot().policy("policy-standard").unwrap();

    assert!(matches!(
        policy.evaluate(&action("allow", &[])).unwrap(),
        Decision::Allow
    ));

    let single = action("single:reviewer", &[]);
    match policy.evaluate(&single).unwrap() {
        Decision::RequireApproval(r) => {
            assert_eq!(r.approvals_needed, 1);
            assert_eq!(r.approver_types, ["reviewer"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        policy
            .tally(&single, &[vote("a", "assistant", true)])
            .unwrap(),
        Outcome::Pending(1)
    ));
    assert!(matches!(
        policy
            .tally(&single, &[vote("r", "reviewer", true)])
            .unwrap(),
        Outcome::Approved
    ));
    assert!(matches!(
        policy
            .tally(&single, &[vote("r", "reviewer", false)])
            .unwrap(),
        Outcome::Rejected(_)
    ));

    let consensus = action("consensus:2", &[]);
    assert!(matches!(
        policy.tally(&consensus, &[vote("a", "x", true)]).unwrap(),
        Outcome::Pending(1)
    ));
    assert!(matches!(
        policy
            .tally(&consensus, &[vote("a", "x", true), vote("b", "y", true)])
            .unwrap(),
        Outcome::Approved
    ));

    // A broken rule is an error from the plugin; `decide` fails closed.
    let broken = action("consensus:zero", &[]);
    let err = policy.evaluate(&broken).unwrap_err();
    assert!(err.to_string().contains("consensus:zero"), "{err}");
    match policy.decide(&broken) {
        Decision::Deny(reason) => assert!(reason.contains("policy-standard"), "{reason}"),
        other => panic!("must fail closed, got {other:?}"),
    }
}

#[test]
fn a_custom_policy_sees_the_labels_the_redactor_found() {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "policy-sensitive-data".into(),
        Grant {
            config: [("approver_type".to_string(), "dpo".to_string())].into(),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("policy-sensitive-data")]).unwrap();
    let policy = reg.snapshot().policy("policy-sensitive-data").unwrap();
    assert!(matches!(
        policy.evaluate(&action("allow", &["secret"])).unwrap(),
        Decision::Deny(_)
    ));
    match policy.evaluate(&action("allow", &["email"])).unwrap() {
        Decision::RequireApproval(r) => assert_eq!(r.approver_types, ["dpo"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        policy.evaluate(&action("allow", &[])).unwrap(),
        Decision::Allow
    ));
}

#[test]
fn a_redactor_gets_only_granted_config() {
    // Granted: the terms are found.
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-keywords".into(),
        Grant {
            config: [("terms".to_string(), "project falcon".to_string())].into(),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("redact-keywords")]).unwrap();
    let r = reg.snapshot().redactor("redact-keywords").unwrap();
    let text = "Notes on Project Falcon: ship it.";
    let findings = r.redact(text).unwrap();
    assert_eq!(
        apply_findings(text, &findings),
        "Notes on [REDACTED]: ship it."
    );
    assert_eq!(findings[0].label, "keyword");

    // No grant: the plugin cannot read the key, so finds nothing.
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![staged("redact-keywords")]).unwrap();
    let r = reg.snapshot().redactor("redact-keywords").unwrap();
    assert!(r.redact(text).unwrap().is_empty());
}

#[test]
fn the_pii_redactor_replaces_every_kind_with_its_placeholder() {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-pii".into(),
        Grant {
            config: [("blocklist".to_string(), "project falcon".to_string())].into(),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("redact-pii")]).unwrap();
    let r = reg.snapshot().redactor("redact-pii").unwrap();
    let text = "Ada (ada@example.com, +44 20 7946 0958) paid with 4111 1111 1111 1111 \
        from DE89 3704 0044 0532 0130 00; SSN 123-45-6789; host 10.0.0.7; \
        key sk_live_4eC39HqLyjWDarjtT1zdp7dc; re: Project Falcon.";
    let findings = r.redact(text).unwrap();
    assert_eq!(
        apply_findings(text, &findings),
        "Ada ([EMAIL], [PHONE]) paid with [CARD] from [IBAN]; SSN [SSN]; host [IP]; \
         key [SECRET]; re: [REDACTED]."
    );
    let mut labels: Vec<_> = findings.iter().map(|f| f.label.as_str()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "card", "email", "iban", "ip", "phone", "secret", "ssn", "term"
        ]
    );
    // A Luhn-invalid number and an ordinary sentence are left alone.
    assert!(
        r.redact("ticket 4111 1111 1111 1112 closed on 2024-01-15")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_extractor_returns_entities_and_tags() {
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![staged("extract-hashtags")]).unwrap();
    let x = reg.snapshot().extractor("extract-hashtags").unwrap();
    let out = x
        .extract("Ask @ada about #Rust and #wasm", said(0))
        .unwrap();
    assert_eq!(out.tags, ["rust", "wasm"]);
    assert_eq!(out.entities[0].name, "ada");
}

/// Said at `observed_at` (Unix ms).
fn said(observed_at: i64) -> memhost::plugins::ExtractContext {
    memhost::plugins::ExtractContext {
        observed_at,
        created_at: observed_at,
    }
}

#[test]
fn an_extractor_built_against_the_0_1_contract_still_loads_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir_with_api(
        tmp.path(),
        "old-extractor",
        "extractor",
        "0.1.0",
        &fixture("extract-v01"),
        "",
    );
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![dir]).unwrap();
    let set = reg.snapshot();
    assert_eq!(set.get("old-extractor").unwrap().info.api, "0.1.0");
    let out = set
        .extractor("old-extractor")
        .unwrap()
        .extract("met Ada yesterday", said(1_741_791_600_000))
        .unwrap();
    let names: Vec<&str> = out.entities.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["Ada"]);
    assert!(out.event_times.is_empty(), "0.1 finds no times");
}

#[test]
fn the_shipped_entity_extractor_finds_who_and_what_inside_the_sandbox() {
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![staged("extract-entities")]).unwrap();
    let x = reg.snapshot().extractor("extract-entities").unwrap();
    // Said on Wednesday 2025-03-12.
    let out = x
        .extract(
            "Remember: Dr. Grace Hopper from the University of Pennsylvania reviews PROJ-42 on Monday. \
             Mail [EMAIL] or ping @ghopper; the fix is in src/lib.rs. #review",
            said(1_741_791_600_000),
        )
        .unwrap();
    let monday = 1_741_564_800_000; // 2025-03-10T00:00Z
    assert_eq!(
        out.event_times
            .iter()
            .map(|t| (t.text.as_str(), t.start, t.end))
            .collect::<Vec<_>>(),
        [("on Monday", monday, monday + 86_400_000)]
    );
    let found: Vec<(&str, &str)> = out
        .entities
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("Grace Hopper", "person"),
            ("University of Pennsylvania", "organization"),
            ("PROJ-42", "id"),
            ("@ghopper", "handle"),
            ("src/lib.rs", "path"),
        ]
    );
    assert_eq!(out.tags, ["review"]);
}

#[test]
fn an_embedder_gives_vectors_of_its_declared_dimensions() {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "embed-hashing".into(),
        Grant {
            config: [("dimensions".to_string(), "64".to_string())].into(),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("embed-hashing")]).unwrap();
    let e = reg.snapshot().embedder("embed-hashing").unwrap();
    assert_eq!(e.model().dimensions, 64);
    assert_eq!(e.model().id, "hashing-bow-64");
    let texts: Vec<String> = (0..600).map(|i| format!("text number {i}")).collect();
    // 600 texts > max batch 256: split transparently, order kept.
    let vectors = e.embed(&texts).unwrap();
    assert_eq!(vectors.len(), 600);
    assert!(vectors.iter().all(|v| v.len() == 64));
    assert_eq!(vectors[599], e.embed(&texts[599..]).unwrap()[0]);
}

#[test]
fn a_python_plugin_runs_against_the_same_contract() {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-python".into(),
        Grant {
            config: [("extra_terms".to_string(), "falcon".to_string())].into(),
            ..Grant::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let reg = registry(settings, Some(cache.path()));
    reg.apply(vec![staged("redact-python")]).unwrap();
    let set = reg.snapshot();
    let r = set.redactor("redact-python").unwrap();
    assert_eq!(set.get("redact-python").unwrap().info.api, "0.1.0");
    // Non-ASCII before the match: offsets must be bytes, not characters.
    let text = "Zoë wrote to zoe@example.com about Falcon";
    let findings = r.redact(text).unwrap();
    assert_eq!(
        apply_findings(text, &findings),
        "Zoë wrote to [EMAIL] about [REDACTED]"
    );
    assert!(r.redact("nothing to see").unwrap().is_empty());
}
