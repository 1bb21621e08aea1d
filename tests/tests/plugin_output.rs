//! What a plugin writes to the host's log is bounded and cannot pass for
//! the host's own lines: `host.log` is capped per call and its newlines
//! escaped, and what a guest prints (which may quote the memory it was
//! given) stays out of the log at the default level.

use crate::common::server::*;
use serde_json::json;

#[test]
fn a_chatty_plugin_gets_a_bounded_escaped_log_and_no_memory_text_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    crate::common::plugin_dir(
        &tmp.path().join("plugins"),
        "chatty",
        "redactor",
        &crate::common::fixture("chatty"),
        "",
    );
    let mut s = setup_in(
        tmp,
        &[],
        "",
        &[],
        &[r#"{"name":"loud","embedder":"none","redactor":"chatty"}"#],
    );
    let canary = "canary-4b1d-walrus-of-the-ledger";
    let (status, body) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/loud/memories",
        Some(&json!({ "content": format!("remember {canary}") }).to_string()),
    );
    assert_eq!(status, 201, "{body}");
    s.server
        .wait_for("log lines in one call: the rest of this call's are dropped");
    s.server.drain();
    let log = s.server.seen.join("\n");
    let lines = log.lines().filter(|l| l.contains("chatty line")).count();
    // The load's smoke call and the store's: 64 lines each at most.
    assert!((1..=128).contains(&lines), "{lines} plugin lines");
    assert!(
        log.lines()
            .filter(|l| l.contains("forged-entry"))
            .all(|l| l.contains("chatty line")),
        "a plugin forged a line of its own:\n{log}"
    );
    assert!(!log.contains(canary), "memory text in the log:\n{log}");
}
