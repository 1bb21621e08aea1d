//! What a refusal costs the server: a caller-sized string cannot grow the
//! audit chain (which is never trimmed) or the logs by more than a bounded
//! amount, and a key that keeps asking for what it may not have gets a
//! budget of audit entries instead of one fsync'd entry per request.

use crate::common::server::*;
use serde_json::{Value, json};

#[test]
fn a_megabyte_namespace_name_is_refused_as_invalid_without_growing_the_audit_log() {
    let s = setup("", &[], &[r#"{"name":"team-a","embedder":"none"}"#]);
    let reader = s.admin.as_key(Some(&create_key(
        &s.data,
        "reader",
        "assistant",
        &["team-a=reader"],
        &[],
    )));
    let before = audit_entries(&s.admin);
    let huge = "a".repeat(900 * 1024);
    for _ in 0..5 {
        let r = mcp(
            &reader,
            "tools/call",
            Some("memory_list"),
            json!({ "name": "memory_list", "arguments": { "namespace": huge } }),
        );
        assert_eq!(r["isError"], true, "{r}");
        let text = r.to_string();
        assert!(
            text.contains("is not a valid namespace name"),
            "{text:.300}"
        );
        assert!(text.len() < 4096, "the answer quotes {} bytes", text.len());
    }
    // Over REST, with a name too long and one with a newline in it.
    let long = "b".repeat(64);
    for path in [
        format!("/v1/namespaces/{long}/memories"),
        "/v1/namespaces/team%0Aforged/memories".to_string(),
    ] {
        let (status, body) = curl(&reader, "GET", &path, None);
        assert_eq!(status, 422, "{path}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("is not a valid namespace name"),
            "{body}"
        );
    }
    let after = audit_entries(&s.admin);
    let added: usize = after[before.len()..]
        .iter()
        .map(|e| e.to_string().len())
        .sum();
    assert!(
        added < 16 * 1024,
        "{} entries took {added} bytes",
        after.len() - before.len()
    );
    // Its own namespace still reads.
    let (status, _) = curl(&reader, "GET", "/v1/namespaces/team-a/memories", None);
    assert_eq!(status, 200);
}

#[test]
fn a_key_refused_over_and_over_gets_a_bounded_number_of_audit_entries_and_the_count_of_the_rest() {
    let s = setup(
        "",
        &[],
        &[
            r#"{"name":"team-a","embedder":"none"}"#,
            r#"{"name":"secret","embedder":"none"}"#,
        ],
    );
    let reader = s.admin.as_key(Some(&create_key(
        &s.data,
        "prober",
        "assistant",
        &["team-a=reader"],
        // Its request rate is not what is tested here.
        &["--rate-per-second", "1000", "--burst", "1000"],
    )));
    let before = audit_entries(&s.admin).len();
    for _ in 0..60 {
        let (status, _) = curl(&reader, "GET", "/v1/namespaces/secret/memories", None);
        assert_eq!(status, 403);
    }
    let denied = |entries: &[Value]| {
        entries
            .iter()
            .filter(|e| e["agent_id"] == "prober" && e["outcome"] == "denied")
            .cloned()
            .collect::<Vec<_>>()
    };
    let written = denied(&audit_entries(&s.admin)[before..]);
    assert!(
        (20..=40).contains(&written.len()),
        "{} of 60 refusals written",
        written.len()
    );
    // Once the budget refills, the next refusal says how many were left
    // out: every refusal is either written or counted in a later entry
    // (however the 60 were spread in time on a loaded machine).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, _) = curl(&reader, "GET", "/v1/namespaces/secret/memories", None);
    assert_eq!(status, 403);
    let all = denied(&audit_entries(&s.admin)[before..]);
    let counted: usize = all
        .iter()
        .filter_map(|e| {
            let detail = e["detail"].as_str()?;
            let (head, _) = detail.split_once(" earlier refusals of this key not written")?;
            head.rsplit(' ').next()?.parse::<usize>().ok()
        })
        .sum();
    assert!(counted > 0, "no entry says how many were left out: {all:?}");
    assert_eq!(
        all.len() + counted,
        61,
        "written {} + counted {counted}",
        all.len()
    );
    // Another key is not held to the prober's budget.
    let other = s.admin.as_key(Some(&create_key(
        &s.data,
        "other",
        "assistant",
        &["team-a=reader"],
        &[],
    )));
    let (status, _) = curl(&other, "GET", "/v1/namespaces/secret/memories", None);
    assert_eq!(status, 403);
    let last = audit_entries(&s.admin).pop().unwrap();
    assert_eq!(last["agent_id"], "other", "{last}");
}
