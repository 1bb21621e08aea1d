//! People at the console, without a browser: create a user, sign in with
//! a password as a browser's form would, send console requests with curl.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::server::*;

/// `memhost users create NAME --role …`, with a password on stdin if given.
pub fn create_user(data: &Path, name: &str, roles: &[&str], password: Option<&str>) {
    let mut cmd = Command::new(memhost_bin());
    cmd.args(["users", "create", name, "--data", data.to_str().unwrap()]);
    for r in roles {
        cmd.args(["--role", r]);
    }
    if password.is_some() {
        cmd.arg("--password");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(p) = password {
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request to the console with curl, a form as its body if given.
pub fn console(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    form: Option<&str>,
) -> Reply {
    let (status, headers, body) = curl_raw(
        addr,
        method,
        path,
        headers,
        form.map(|f| ("application/x-www-form-urlencoded", f)),
    );
    Reply {
        status,
        body: Value::String(body),
        headers,
    }
}

/// `pairs` as a browser encodes a form.
pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// A reply's body as text.
pub fn body(r: &Reply) -> &str {
    r.body.as_str().unwrap_or("")
}

/// The sign-in form as a browser sends it: its page first (for the
/// form's cookie and token), then the POST.
pub fn sign_in_post(addr: &str, user: &str, password: &str) -> Reply {
    let page = console(addr, "GET", "/console/login", &[], None);
    let cookie = page.header("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let token = body(&page)
        .split("name=\"signin\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    console(
        addr,
        "POST",
        "/console/login",
        &[&format!("cookie: {cookie}")],
        Some(&form(&[
            ("signin", token.as_str()),
            ("user", user),
            ("password", password),
        ])),
    )
}

/// A signed-in session of `user`: the `cookie:` header that carries it.
pub fn session_cookie(addr: &str, user: &str, password: &str) -> String {
    let r = sign_in_post(addr, user, password);
    assert_eq!(r.status, 303, "{}", body(&r));
    let cookie = r
        .headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim())
        .find(|v| v.starts_with("memhost_session=mhs_"))
        .unwrap_or_else(|| panic!("no session cookie: {}", r.headers));
    format!("cookie: {}", cookie.split(';').next().unwrap())
}
