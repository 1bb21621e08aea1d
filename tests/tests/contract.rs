//! The OpenAPI document is true to the server: schemathesis (installed by
//! `cargo xtask test` into `target/py-st`) runs every one of its checks
//! against the served `/v1/openapi.json` of a real server — no 5xx, no
//! status, content type or body the document does not list, no request it
//! allows refused and none it forbids taken — and must find nothing but
//! the exceptions `tests/contract/schemathesis.toml` lists with their
//! reasons.

use std::process::Command;

use crate::common::root;
use crate::common::server::*;

/// How long the property-based run may take, in seconds.
const BUDGET_SECONDS: &str = "60";

#[test]
fn schemathesis_finds_nothing_the_document_does_not_say() {
    let st = root().join("target/py-st/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: run `cargo xtask test` (it installs schemathesis)",
        st.display()
    );
    // Limits out of the way: the run sends thousands of requests, many
    // without a key.
    let s = setup(
        "[limits]\nrequests_per_second = 100000\nburst = 100000\nconcurrent_requests = 64\nauth_failures_per_minute = 1000000\n",
        &[],
        &[r#"{"name":"team","embedder":"none"}"#],
    );
    // Its cache of earlier findings stays out of the repository.
    let out = Command::new(&st)
        .current_dir(s.tmp.path())
        .arg("--config-file")
        .arg(root().join("tests/contract/schemathesis.toml"))
        // Every check is enabled in the config file, which also lists the
        // exceptions (a `--checks` here would override them).
        .args(["run", "--workers", "2", "--max-time", BUDGET_SECONDS])
        .args(["--seed", "1"])
        .args(["-H", &format!("Authorization: Bearer {}", s.server.key)])
        .arg(format!("http://{}/v1/openapi.json", s.server.addr))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("SUMMARY"),
        "schemathesis did not run:\n{report}\n{stderr}"
    );
    assert!(
        !report.contains("\nFailures:"),
        "schemathesis found what the document does not say:\n{report}"
    );
    // What is left of a failed exit is schemathesis failing in itself: a
    // Python bug while it describes a generator, never a server answer.
    let own_errors = report.matches("Runtime Error").count();
    let python_bug = report
        .matches("AST constructor recursion depth mismatch")
        .count();
    assert!(
        out.status.success() || (own_errors > 0 && own_errors <= python_bug),
        "schemathesis failed:\n{report}\n{stderr}"
    );
}
