//! The console's HTML, as `maud` templates: every value is escaped by the
//! template engine, every form of a signed-in page carries the session's
//! CSRF token, and no page has a script.

use maud::{DOCTYPE, Markup, html};

use super::actions::{Listing, MAX_PAGE, NamespaceRow};
use super::{Req, Visitor};
use crate::audit::Entry;
use crate::auth::Role;
use crate::auth::keys::KeyInfo;
use crate::auth::users::UserInfo;
use crate::governance::{Kind, PendingAction, State};
use crate::metrics::PluginFailure;
use crate::plugins::status::PluginStatus;
use crate::service::approvals::ApprovalView;
use crate::service::indexing::IndexProgress;
use crate::service::{Memory, Namespace};

/// `2026-11-30 12:04 UTC`.
fn when(ms: i64) -> String {
    let iso = crate::service::model::iso8601(ms);
    match iso.get(..16) {
        Some(t) => format!("{} UTC", t.replace('T', " ")),
        None => iso,
    }
}

/// `in 3 h 5 min` / `2 min ago`.
fn relative(ms: i64) -> String {
    let now = crate::clock::now_ms();
    let (d, future) = if ms >= now {
        (ms - now, true)
    } else {
        (now - ms, false)
    };
    let mins = d / 60_000;
    let text = match mins {
        0 => "less than a minute".to_string(),
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h {} min", m / 60, m % 60),
        m => format!("{} days", m / (24 * 60)),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn short(id: &impl ToString) -> String {
    id.to_string().chars().take(8).collect()
}

fn csrf(v: &Visitor) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.session.csrf); }
}

/// A whole HTML document.
fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · memhost" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body { (body) }
        }
    }
}

/// A page of a signed-in user: header, navigation, content.
fn layout(v: &Visitor, here: &str, title: &str, body: Markup) -> Markup {
    let admin = v.who.grants.iter().any(|g| g.role == Role::Admin);
    let global = v.who.is_global_admin();
    let nav = [
        ("namespaces", "/console", "Namespaces", true),
        ("approvals", "/console/approvals", "Approvals", true),
        ("audit", "/console/audit", "Audit", global),
        ("plugins", "/console/plugins", "Plugins", true),
        ("keys", "/console/keys", "Keys", admin),
        ("users", "/console/users", "Users", global),
    ];
    document(
        title,
        html! {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "mem" span { "host" } }
                    nav aria-label="Main" {
                        @for (id, href, label, shown) in nav {
                            @if shown {
                                a href=(href) .here[id == here] aria-current=[(id == here).then_some("page")] { (label) }
                            }
                        }
                    }
                    div.who {
                        a href="/console/account" title="Your account" { (v.user.name) }
                        form.inline method="post" action="/console/sign-out" {
                            (csrf(v))
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
        },
    )
}

/// A page without a session (sign-in).
fn bare(title: &str, body: Markup) -> Markup {
    document(
        title,
        html! {
            main id="main" {
                div.signin {
                    div.brand { "mem" span { "host" } }
                    (body)
                }
            }
        },
    )
}

fn flash(ok: Option<&str>) -> Markup {
    let text = match ok {
        Some("stored") => "Stored.",
        Some("duplicate") => "The same content was already stored: this is it.",
        Some("updated") => "Saved as a new version.",
        Some("forgotten") => "Forgotten.",
        Some("executed") => "Approved: the change ran.",
        Some("pending") => "Your vote is counted; more votes are needed.",
        Some("rejected") => "Rejected: nothing will run.",
        Some("failed") => "The change could not run; see the reason below.",
        Some("cancelled") => "Withdrawn.",
        Some("revoked") => "Revoked: the key stops working at once.",
        Some("created") => "Created.",
        Some("disabled") => "Disabled: the user's sessions have ended.",
        Some("reloaded") => "Plugins reloaded.",
        Some("password") => "Password changed.",
        Some("disconnected") => "Disconnected: the app's tokens stop working at once.",
        _ => return html! {},
    };
    let class = match ok {
        Some("rejected" | "failed") => "flash bad",
        _ => "flash ok",
    };
    html! { div class=(class) role="status" { (text) } }
}

/// A secret the page shows this once (a new key, a sign-in link).
fn shown_once(headline: &str, note: &str, secret: &str) -> Markup {
    html! {
        div.flash.ok role="status" {
            p { strong { (headline) } " " (note) }
            div.secret { (secret) }
        }
    }
}

fn state(s: State) -> Markup {
    html! { span class={ "state state-" (s.as_str()) } { (s.as_str()) } }
}

fn tags(list: &[String]) -> Markup {
    html! { @for t in list { span.tag { (t) } } }
}

/// Word by word, what changed from `old` to `new`.
fn diff(old: &str, new: &str) -> Markup {
    let d = similar::TextDiff::from_words(old, new);
    html! {
        div.diff.content {
            @for change in d.iter_all_changes() {
                @match change.tag() {
                    similar::ChangeTag::Equal => (change.value()),
                    similar::ChangeTag::Delete => del { (change.value()) },
                    similar::ChangeTag::Insert => ins { (change.value()) },
                }
            }
        }
    }
}

pub(super) fn sign_in(
    token: &str,
    next: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    bare(
        "Sign in",
        html! {
            div.panel {
                h1 { "Sign in" }
                @if let Some(e) = error { div.flash.bad role="alert" { (e) } }
                @match notice {
                    Some("signed-out") => div.flash.ok role="status" { "You are signed out." },
                    Some("password") => div.flash.ok role="status" { "Password changed: sign in with the new one." },
                    _ => {},
                }
                form.stack method="post" action="/console/login" {
                    input type="hidden" name="signin" value=(token);
                    input type="hidden" name="next" value=(next);
                    label { "User name" input type="text" name="user" autocomplete="username" required autofocus; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    div.actions { button type="submit" { "Sign in" } }
                }
                p.muted.small {
                    "No password? Ask an operator for a one-time link: "
                    code { "memhost login-link NAME" }
                }
            }
        },
    )
}

pub(super) fn link(user: &str, token: &str) -> Markup {
    bare(
        "Sign in",
        html! {
            div.panel {
                h1 { "Sign in as " (user) }
                p.sub { "This one-time link signs you in once. Continue only if you asked for it." }
                form method="post" {
                    input type="hidden" name="signin" value=(token);
                    button type="submit" autofocus { "Continue as " (user) }
                }
            }
        },
    )
}

pub(super) fn link_refused() -> Markup {
    bare(
        "Link not valid",
        html! {
            div.panel {
                h1 { "This link does not work" }
                p { "Sign-in links work once, for a short time. Ask for a new one ("
                    code { "memhost login-link NAME" } "), or "
                    a href="/console/login" { "sign in with your password" } "." }
            }
        },
    )
}

pub(super) fn problem(v: Option<&Visitor>, title: &str, detail: &str) -> Markup {
    let body = html! {
        div.panel {
            h1 { (title) }
            p { (detail) }
            p { a href="/console" { "Back to the console" } }
        }
    };
    match v {
        Some(v) => layout(v, "", title, body),
        None => bare(title, body),
    }
}

pub(super) fn held(v: Option<&Visitor>, item: &PendingAction) -> Markup {
    let body = html! {
        h1 { "Held for approval" }
        div.flash.warn role="status" {
            strong { "Held for approval. " }
            "Nothing was written yet: the namespace's policy asks for "
            (item.requirement.summary) "."
        }
        p { a href={ "/console/approvals/" (item.id) } { "See approval " (short(&item.id)) } }
    };
    match v {
        Some(v) => layout(v, "approvals", "Held for approval", body),
        None => bare("Held for approval", body),
    }
}

pub(super) fn overview(
    v: &Visitor,
    ok: Option<&str>,
    rows: &[NamespaceRow],
    waiting: usize,
    embedders: &[String],
) -> Markup {
    let admin = v.who.grants.iter().any(|g| g.role == Role::Admin);
    layout(
        v,
        "namespaces",
        "Namespaces",
        html! {
            h1 { "Namespaces" }
            p.sub { "The namespaces you have a role on." }
            (flash(ok))
            @if waiting > 0 {
                div.flash.warn {
                    a href="/console/approvals" { (waiting) " change" @if waiting != 1 { "s" } " waiting for your vote" }
                }
            }
            @if rows.is_empty() {
                div.panel { p { @if admin { "No namespaces yet: create one below." } @else { "You have no role on any namespace yet." } } }
            } @else {
                div.table-wrap {
                    table.stack {
                        thead { tr {
                            th { "Name" } th.num { "Memories" } th { "Your role" } th { "Policy" }
                            th { "Embedder" } th { "Indexing" } th { "Created" }
                        } }
                        tbody {
                            @for r in rows {
                                tr {
                                    td data-label="Name" {
                                        a href={ "/console/ns/" (r.ns.name) } { strong { (r.ns.name) } }
                                        @if let Some(d) = &r.ns.settings.description { br; span.muted.small { (d) } }
                                    }
                                    td.num data-label="Memories" { (r.memories) }
                                    td data-label="Your role" { (r.role.map_or("-", Role::as_str)) }
                                    td data-label="Policy" { code { (r.ns.settings.policy) } }
                                    td data-label="Embedder" { (r.ns.settings.embedder.as_deref().unwrap_or("words only")) }
                                    td data-label="Indexing" { (indexing(r.index.as_ref())) }
                                    td data-label="Created" { (when(r.ns.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                h2 { "New namespace" }
                div.panel {
                    form.stack method="post" action="/console/namespaces" {
                        (csrf(v))
                        label { "Name (lowercase letters, digits, . _ -)" input type="text" name="name" required pattern="[a-z0-9][a-z0-9._-]{0,62}"; }
                        label { "Description (optional)" input type="text" name="description"; }
                        label { "Policy" input type="text" name="policy" value="allow" required; }
                        p.muted.small { code { "allow" } ", " code { "single:human" } ", " code { "consensus:2" } ", or per kind: " code { "store=allow; forget=single:human; *=consensus:2" } }
                        label { "Meaning search (embedder, bound for good)" select name="embedder" {
                            option value="default" { "the server's default" }
                            @for e in embedders { option value=(e) { (e) } }
                            option value="none" { "none: words only" }
                        } }
                        div.actions { button type="submit" { "Create namespace" } }
                    }
                }
            }
        },
    )
}

fn indexing(p: Option<&IndexProgress>) -> Markup {
    match p {
        None => html! { span.muted { "-" } },
        Some(p) if p.queued == 0 && p.failed == 0 => html! { span.state.state-ok { "up to date" } },
        Some(p) => html! {
            @if p.queued > 0 { span.state.state-pending { (p.queued) " queued" } " " }
            @if p.failed > 0 { span.state.state-failed { (p.failed) " failed" } }
        },
    }
}

pub(super) fn memories(
    v: &Visitor,
    req: &Req,
    ns: &Namespace,
    index: Option<&IndexProgress>,
    listing: &Listing,
    per_page: usize,
) -> Markup {
    let role = v.who.role_in(&ns.name);
    let q = req.q("q").unwrap_or("");
    let tags_q = req.q("tags").unwrap_or("");
    let agent_q = req.q("agent").unwrap_or("");
    layout(
        v,
        "namespaces",
        &ns.name,
        html! {
            div.crumbs { a href="/console" { "Namespaces" } " / " }
            h1 { (ns.name) }
            p.sub {
                "Policy " code { (ns.settings.policy) } " · "
                (ns.settings.embedder.as_deref().unwrap_or("words only")) " · redaction "
                (serde_json::to_value(ns.settings.redaction).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
                @if index.is_some() { " · indexing " (indexing(index)) }
                " · your role " (role.map_or("-", Role::as_str))
            }
            (flash(req.q("ok")))
            details.panel {
                summary { "Settings" }
                dl.facts {
                    dt { "Policy" } dd { code { (ns.settings.policy) } " read by " (ns.settings.policy_plugin) }
                    dt { "Held changes wait" } dd { (ns.settings.approval_ttl_ms() / 3_600_000) " h" }
                    dt { "Human votes" } dd { @match ns.settings.human_votes {
                        crate::service::HumanVotes::Any => "people in the console and keys typed human",
                        crate::service::HumanVotes::Console => "only people signed in to the console",
                    } }
                    dt { "Redactor" } dd { (ns.settings.redactor) }
                    dt { "Embedder" } dd { (ns.settings.embedder.as_deref().unwrap_or("none")) @if let Some(d) = ns.settings.dimensions { " (" (d) " dimensions)" } }
                    dt { "Extractor" } dd { (ns.settings.extractor.as_deref().unwrap_or("none")) }
                    dt { "Created" } dd { (when(ns.created_at)) }
                    dt { "Id" } dd { code { (ns.id) } }
                }
            }
            form.row method="get" role="search" {
                input type="search" name="q" value=(q) placeholder="Search by words and meaning" aria-label="Search";
                input type="text" name="tags" value=(tags_q) placeholder="tags (a, b)" aria-label="Tags" size="14";
                input type="text" name="agent" value=(agent_q) placeholder="agent" aria-label="Agent" size="12";
                button type="submit" { "Search" }
                @if !q.is_empty() || !tags_q.is_empty() || !agent_q.is_empty() {
                    a.button.quiet href={ "/console/ns/" (ns.name) } { "Clear" }
                }
            }
            @match listing {
                Listing::Found(hits) => {
                    h2 { (hits.len()) " found for “" (q) "”" }
                    div.table-wrap { table.stack {
                        thead { tr { th { "Memory" } th { "Found by" } th.num { "Score" } th { "Tags" } th { "Agent" } th { "Updated" } } }
                        tbody { @for h in hits {
                            tr {
                                td data-label="Memory" { (memory_cell(&ns.name, &h.memory)) }
                                td data-label="Found by" { @for c in &h.channels { span.chan { (channel(c)) } } }
                                td.num data-label="Score" { (format!("{:.3}", h.score)) }
                                td data-label="Tags" { (tags(&h.memory.tags)) }
                                td data-label="Agent" { (h.memory.agent_id) }
                                td data-label="Updated" { (when(h.memory.updated_at)) }
                            }
                        } }
                    } }
                }
                Listing::Page(list, next) => {
                    h2 { "Memories" span.muted.small { " · " (list.len()) " shown, oldest first" } }
                    @if list.is_empty() {
                        div.panel { p.muted { "No memories match." } }
                    } @else {
                        div.table-wrap { table.stack {
                            thead { tr { th { "Memory" } th { "Tags" } th { "Agent" } th.num { "Version" } th { "Updated" } } }
                            tbody { @for m in list {
                                tr {
                                    td data-label="Memory" { (memory_cell(&ns.name, m)) }
                                    td data-label="Tags" { (tags(&m.tags)) }
                                    td data-label="Agent" { (m.agent_id) }
                                    td.num data-label="Version" { (m.version) }
                                    td data-label="Updated" { (when(m.updated_at)) }
                                }
                            } }
                        } }
                    }
                    div.pager {
                        @if let Some(c) = next {
                            a.button.quiet href={ "/console/ns/" (ns.name) "?" (query(&[("cursor", &c.to_string()), ("limit", &per_page.to_string()), ("tags", tags_q), ("agent", agent_q)])) } { "Next " (per_page) " →" }
                        }
                        span.muted.small { "Per page: "
                            @for n in [100, 500, MAX_PAGE] {
                                a href={ "/console/ns/" (ns.name) "?" (query(&[("limit", &n.to_string()), ("tags", tags_q), ("agent", agent_q)])) } { (n) } " "
                            }
                        }
                    }
                }
            }
            @if role.is_some_and(|r| r >= Role::Writer) && matches!(listing, Listing::Page(..)) {
                h2 { "New memory" }
                div.panel {
                    form.stack method="post" action={ "/console/ns/" (ns.name) "/memories" } {
                        (csrf(v))
                        label { "Content" textarea name="content" required {} }
                        label { "Title (optional)" input type="text" name="title"; }
                        label { "Tags, comma-separated (optional)" input type="text" name="tags"; }
                        div.actions { button type="submit" { "Store" } span.muted.small { "The namespace's policy decides; it may hold the change for approval." } }
                    }
                }
            }
        },
    )
}

/// A query string from `pairs` (empty values left out), each encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

fn channel(c: &str) -> &str {
    match c {
        "lexical" => "words",
        "vector" => "meaning",
        other => other,
    }
}

fn memory_cell(ns: &str, m: &Memory) -> Markup {
    let text = m
        .title
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or(&m.content);
    let text: String = text.chars().take(160).collect();
    html! {
        a.clip href={ "/console/ns/" (ns) "/m/" (m.id) } { (text) }
    }
}

pub(super) fn memory(
    v: &Visitor,
    req: &Req,
    m: &Memory,
    versions: &[Memory],
    from: u32,
    to: u32,
) -> Markup {
    let may_change = v.who.may_change(&m.namespace, &m.agent_id);
    let version = |n: u32| versions.iter().find(|x| x.version == n);
    layout(
        v,
        "namespaces",
        m.title.as_deref().unwrap_or("Memory"),
        html! {
            div.crumbs { a href="/console" { "Namespaces" } " / " a href={ "/console/ns/" (m.namespace) } { (m.namespace) } " /" }
            h1 { (m.title.as_deref().filter(|t| !t.is_empty()).unwrap_or("Memory")) }
            (flash(req.q("ok")))
            div.panel { div.content { (m.content) } }
            div.panel {
                dl.facts {
                    dt { "Id" } dd { code { (m.id) } }
                    dt { "Version" } dd { (m.version) }
                    dt { "Written by" } dd { (m.agent_id) " (" (m.agent_type) ")" @if let Some(u) = &m.updated_by { ", last changed by " (u) } }
                    dt { "Created" } dd { (when(m.created_at)) }
                    dt { "Updated" } dd { (when(m.updated_at)) }
                    @if let Some(e) = m.expires_at { dt { "Expires" } dd { (when(e)) " (" (relative(e)) ")" } }
                    @if !m.tags.is_empty() { dt { "Tags" } dd { (tags(&m.tags)) } }
                    @if !m.entities.is_empty() { dt { "Names" } dd { @for e in &m.entities { span.tag title=(e.kind) { (e.name) } } } }
                    @if !m.redactions.is_empty() { dt { "Redacted" } dd { @for (label, n) in &m.redactions { span.tag { (label) " × " (n) } } } }
                    @if let Some(s) = &m.status { dt { "Indexing" } dd { (s) @if let Some(r) = &m.status_reason { ": " (r) } } }
                    @if !m.metadata.is_empty() { dt { "Metadata" } dd { code { (serde_json::Value::Object(m.metadata.clone())) } } }
                }
            }
            h2 { "Versions" }
            @if versions.len() < 2 {
                p.muted { "Only this version." }
            } @else {
                form.row method="get" {
                    label { "From" select name="from" { @for x in versions { option value=(x.version) selected[x.version == from] { "v" (x.version) " · " (when(x.updated_at)) } } } }
                    label { "To" select name="to" { @for x in versions { option value=(x.version) selected[x.version == to] { "v" (x.version) " · " (when(x.updated_at)) } } } }
                    button type="submit" { "Compare" }
                }
                @match (version(from), version(to)) {
                    (Some(a), Some(b)) => {
                        div.panel {
                            p.muted.small { "v" (a.version) " → v" (b.version) ", by " (b.updated_by.as_deref().unwrap_or(&b.agent_id)) }
                            @if a.title != b.title { p { "Title: " (diff(a.title.as_deref().unwrap_or(""), b.title.as_deref().unwrap_or(""))) } }
                            @if a.tags != b.tags { p { "Tags: " (diff(&a.tags.join(", "), &b.tags.join(", "))) } }
                            (diff(&a.content, &b.content))
                        }
                    }
                    _ => p.muted { "Choose two versions to compare." },
                }
            }
            @if may_change {
                h2 { "Change" }
                div.panel {
                    form.stack method="post" action={ "/console/ns/" (m.namespace) "/m/" (m.id) } {
                        (csrf(v))
                        label { "Content" textarea name="content" required { (m.content) } }
                        label { "Title" input type="text" name="title" value=(m.title.as_deref().unwrap_or("")); }
                        label { "Tags, comma-separated" input type="text" name="tags" value=(m.tags.join(", ")); }
                        div.actions { button type="submit" { "Save as a new version" } }
                    }
                    form method="post" action={ "/console/ns/" (m.namespace) "/m/" (m.id) "/forget" } {
                        (csrf(v))
                        div.actions { button.danger type="submit" { "Forget this memory" } span.muted.small { "Its versions go with it. The policy may hold this for approval." } }
                    }
                }
            }
        },
    )
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Store => "store",
        Kind::Update => "update",
        Kind::Forget => "forget",
        Kind::Configure => "settings",
        Kind::DeleteNamespace => "delete namespace",
        Kind::Reindex => "reindex",
    }
}

pub(super) fn approvals(
    v: &Visitor,
    view: &str,
    filter: Option<State>,
    items: &[ApprovalView],
) -> Markup {
    let tabs = [
        ("waiting", "Waiting for me"),
        ("mine", "Asked by me"),
        ("all", "All I can see"),
    ];
    layout(
        v,
        "approvals",
        "Approvals",
        html! {
            h1 { "Approvals" }
            p.sub { "Changes a namespace's policy held until people or agents approve them." }
            nav.tabs aria-label="Approvals" {
                @for (id, label) in tabs {
                    a href={ "/console/approvals?view=" (id) } .here[view == id] aria-current=[(view == id).then_some("page")] { (label) }
                }
            }
            @if view != "waiting" {
                form.row method="get" {
                    input type="hidden" name="view" value=(view);
                    label { "State" select name="state" {
                        option value="" { "any" }
                        @for s in [State::Pending, State::Executed, State::Rejected, State::Failed, State::Expired, State::Cancelled, State::Superseded] {
                            option value=(s.as_str()) selected[filter == Some(s)] { (s.as_str()) }
                        }
                    } }
                    button type="submit" { "Show" }
                }
            }
            @if items.is_empty() {
                div.panel { p.muted { @if view == "waiting" { "Nothing is waiting for your vote." } @else { "None." } } }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "Change" } th { "Namespace" } th { "Asked by" } th { "Needs" } th.num { "Votes" } th { "State" } th { "Expires" } } }
                    tbody { @for a in items {
                        @let i = &a.item;
                        tr {
                            td data-label="Change" { a href={ "/console/approvals/" (i.id) } { strong { (kind(i.kind)) } " " span.mono { (short(&i.id)) } } }
                            td data-label="Namespace" { (i.namespace) }
                            td data-label="Asked by" { (i.requester.agent_id) " (" (i.requester.agent_type) ")" }
                            td data-label="Needs" { (i.requirement.summary) }
                            td.num data-label="Votes" { (i.votes.iter().filter(|v| v.approve).count()) " / " (i.requirement.approvals_needed) }
                            td data-label="State" { (state(i.state)) }
                            td data-label="Expires" { @if i.state == State::Pending { (relative(i.expires_at)) } @else { "-" } }
                        }
                    } }
                } }
            }
        },
    )
}

pub(super) fn approval(
    v: &Visitor,
    ok: Option<&str>,
    a: &ApprovalView,
    current: Option<&Memory>,
) -> Markup {
    let i = &a.item;
    let open = i.state == State::Pending;
    let own = i.requester.agent_id == v.who.agent_id;
    let voted = i.voted(&v.who.agent_id).is_some();
    let may_vote = crate::service::approvals::may_vote(&v.who, i);
    let payload = a.payload.as_ref();
    let field = |path: &[&str]| -> Option<String> {
        let mut x = payload?;
        for p in path {
            x = x.get(p)?;
        }
        match x {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    layout(
        v,
        "approvals",
        "Approval",
        html! {
            div.crumbs { a href="/console/approvals" { "Approvals" } " /" }
            h1 { (kind(i.kind)) " in " (i.namespace) " " span.mono.muted { (short(&i.id)) } }
            (flash(ok))
            div.panel {
                dl.facts {
                    dt { "State" } dd { (state(i.state)) @if let Some(r) = &i.reason { " — " (r) } }
                    dt { "Asked by" } dd { (i.requester.agent_id) " (" (i.requester.agent_type) "), key " code { (i.requester.key_id) } }
                    dt { "Asked" } dd { (when(i.created_at)) }
                    @if open { dt { "Time left" } dd { (relative(i.expires_at)) " (" (when(i.expires_at)) ")" } }
                    @if let Some(c) = i.closed_at { dt { "Closed" } dd { (when(c)) } }
                    dt { "Policy" } dd { code { (i.policy.config) } " (" (i.policy.plugin) " " (i.policy.version) ")" }
                    dt { "Needs" } dd { (i.requirement.summary) }
                    @if !i.tags.is_empty() { dt { "Tags" } dd { (tags(&i.tags)) } }
                    @if !i.labels.is_empty() { dt { "Redactor found" } dd { (tags(&i.labels)) } }
                    @if let Some(t) = i.target_id { dt { "Memory" } dd { a href={ "/console/ns/" (i.namespace) "/m/" (t) } { code { (t) } } " at v" (i.target_version.unwrap_or(0)) } }
                }
            }
            h2 { "The change" }
            div.panel {
                @match (i.kind, payload) {
                    (_, None) => p.muted { "Closed: what it held is no longer shown." },
                    (Kind::Store, Some(_)) => {
                        @if let Some(t) = field(&["memory", "title"]) { p { strong { "Title: " } (t) } }
                        @if let Some(t) = field(&["memory", "tags"]).filter(|t| !t.is_empty()) { p { strong { "Tags: " } (t) } }
                        (diff("", &field(&["memory", "content"]).unwrap_or_default()))
                    },
                    (Kind::Update, Some(_)) => {
                        @match current {
                            Some(m) => {
                                p.muted.small { "Against the current version (v" (m.version) "):" }
                                @if let Some(t) = field(&["patch", "title"]) { @if Some(t.as_str()) != m.title.as_deref() { p { strong { "Title: " } (diff(m.title.as_deref().unwrap_or(""), &t)) } } }
                                @if let Some(t) = field(&["patch", "tags"]) { @if t != m.tags.join(", ") { p { strong { "Tags: " } (diff(&m.tags.join(", "), &t)) } } }
                                (diff(&m.content, &field(&["patch", "content"]).unwrap_or_else(|| m.content.clone())))
                            }
                            None => pre.mono { (payload.map(|p| p.to_string()).unwrap_or_default()) },
                        }
                    },
                    (Kind::Forget, Some(_)) => {
                        p { "Forget this memory and its versions:" }
                        @if let Some(m) = current { (diff(&m.content, "")) }
                    },
                    (_, Some(p)) => pre.mono { (serde_json::to_string_pretty(p).unwrap_or_default()) },
                }
            }
            h2 { "Votes" }
            @if i.votes.is_empty() {
                p.muted { "No votes yet." }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "Voter" } th { "Vote" } th { "Through" } th { "Comment" } th { "When" } } }
                    tbody { @for vote in &i.votes {
                        tr {
                            td data-label="Voter" { (vote.agent_id) " (" (vote.agent_type) ")" }
                            td data-label="Vote" { @if vote.approve { span.state.state-ok { "approve" } } @else { span.state.state-rejected { "reject" } } }
                            td data-label="Through" { @if vote.key_id.starts_with(crate::auth::users::CREDENTIAL_PREFIX) { "console" } @else { "key " code { (vote.key_id) } } }
                            td data-label="Comment" { (vote.comment.as_deref().unwrap_or("")) }
                            td data-label="When" { (when(vote.at)) }
                        }
                    } }
                } }
            }
            @if may_vote {
                h2 { "Your vote" }
                div.panel {
                    form.stack method="post" action={ "/console/approvals/" (i.id) "/vote" } {
                        (csrf(v))
                        input type="hidden" name="payload_hash" value=(i.payload_hash);
                        label { "Comment (optional)" textarea name="comment" rows="3" {} }
                        div.actions {
                            button.ok type="submit" name="decision" value="approve" { "Approve" }
                            button.danger type="submit" name="decision" value="reject" { "Reject" }
                        }
                    }
                }
            } @else if open && own {
                div.panel {
                    p { "You asked for this change; others decide." }
                    form method="post" action={ "/console/approvals/" (i.id) "/cancel" } {
                        (csrf(v))
                        button.danger type="submit" { "Withdraw it" }
                    }
                }
            } @else if open && voted {
                p.muted { "You voted." }
            } @else if open {
                p.muted { "Your vote does not count here: it needs " (i.requirement.approver_types.join(" or ")) "." }
            }
        },
    )
}

/// What the audit page shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditFilter {
    pub action: Option<String>,
    pub agent: Option<String>,
    pub namespace: Option<String>,
    pub outcome: Option<String>,
}

impl AuditFilter {
    /// Does `e` pass? Actions match by prefix (`memory.` for all of them).
    pub fn keeps(&self, e: &Entry) -> bool {
        let r = &e.record;
        self.action
            .as_ref()
            .is_none_or(|a| r.action.starts_with(a.as_str()))
            && self
                .agent
                .as_ref()
                .is_none_or(|a| r.agent_id.as_deref() == Some(a.as_str()))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| r.namespace.as_deref() == Some(n.as_str()))
            && self.outcome.as_ref().is_none_or(|o| r.outcome == *o)
    }

    fn query(&self) -> String {
        [
            ("action", &self.action),
            ("agent", &self.agent),
            ("namespace", &self.namespace),
            ("outcome", &self.outcome),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .map(|(k, v)| serde_urlencoded::to_string([(k, v)]).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("&")
    }
}

pub(super) fn audit(
    v: &Visitor,
    f: &AuditFilter,
    entries: &[Entry],
    next: Option<u64>,
    verified: &super::actions::Verified,
    length: u64,
) -> Markup {
    let (outcome, at) = (&verified.outcome, verified.at);
    layout(
        v,
        "audit",
        "Audit",
        html! {
            h1 { "Audit log" }
            @match outcome {
                Ok(n) => div.flash.ok role="status" { "Chain verified: " (n) " entries, each sealed to the one before (checked " (relative(at)) "; again at most once a minute)." },
                Err(e) => div.flash.bad role="alert" { strong { "The chain does not verify. " } (e) },
            }
            p.sub { (length) " entries in all, newest first." }
            form.row method="get" {
                label { "Action" input type="text" name="action" value=(f.action.as_deref().unwrap_or("")) placeholder="memory." size="14"; }
                label { "Agent" input type="text" name="agent" value=(f.agent.as_deref().unwrap_or("")) size="12"; }
                label { "Namespace" input type="text" name="namespace" value=(f.namespace.as_deref().unwrap_or("")) size="12"; }
                label { "Outcome" select name="outcome" {
                    option value="" { "any" }
                    @for o in ["ok", "denied", "failed", "rate-limited", "duplicate", "held", "approve", "reject"] {
                        option value=(o) selected[f.outcome.as_deref() == Some(o)] { (o) }
                    }
                } }
                button type="submit" { "Filter" }
            }
            @if entries.is_empty() {
                div.panel { p.muted { "No entries match." } }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th.num { "#" } th { "When" } th { "Action" } th { "Who" } th { "Namespace" } th { "Target" } th { "Outcome" } th { "Detail" } } }
                    tbody { @for e in entries {
                        @let r = &e.record;
                        tr {
                            td.num data-label="#" { (e.seq) }
                            td data-label="When" { (when(e.time)) }
                            td data-label="Action" { code { (r.action) } }
                            td data-label="Who" { (r.agent_id.as_deref().unwrap_or("-")) @if let Some(k) = &r.key_id { br; span.muted.small.mono { (k) } } }
                            td data-label="Namespace" { (r.namespace.as_deref().unwrap_or("")) }
                            td data-label="Target" { span.mono.small { (r.target.as_deref().unwrap_or("")) } }
                            td data-label="Outcome" { span class={ "state state-" (r.outcome) } { (r.outcome) } }
                            td data-label="Detail" { span.small { (r.detail.as_deref().unwrap_or("")) } @if let Some(s) = &r.source { br; span.muted.small { "from " (s) } } }
                        }
                    } }
                } }
            }
            @if let Some(n) = next {
                div.pager { a.button.quiet href={ "/console/audit?before=" (n) "&" (f.query()) } { "Older →" } }
            }
        },
    )
}

pub(super) fn plugins(
    v: &Visitor,
    ok: Option<&str>,
    status: Option<&PluginStatus>,
    failures: &[PluginFailure],
) -> Markup {
    layout(
        v,
        "plugins",
        "Plugins",
        html! {
            h1 { "Plugins" }
            p.sub { "Sandboxed WebAssembly components: what each may use is its manifest's request cut down to the operator's grants." }
            @if ok == Some("failed") {
                div.flash.bad role="alert" { "The reload failed: the plugins in use did not change. See the last reload below." }
            } @else { (flash(ok)) }
            @match status {
                None => div.panel { p.muted { "No plugin status yet." } },
                Some(s) => {
                    div.panel {
                        dl.facts {
                            dt { "Last reload" } dd {
                                @if s.last_ok { span.state.state-ok { "ok" } } @else { span.state.state-failed { "failed" } }
                                " · " (when((s.last_at as i64) * 1000)) " · attempt " (s.attempt) " · generation " (s.generation)
                            }
                            dt { "What it did" } dd { (s.last_summary.to_string()) }
                            @for (id, why) in &s.last_summary.failed { dt { (id) } dd.state.state-failed { (why) } }
                        }
                        @if v.who.is_global_admin() {
                            form method="post" action="/console/plugins/reload" {
                                (csrf(v))
                                div.actions { button type="submit" { "Reload plugins" } span.muted.small { "Loads, checks and smoke-tests every changed plugin; swaps only if all pass." } }
                            }
                        }
                    }
                    div.table-wrap { table.stack {
                        thead { tr { th { "Plugin" } th { "Kind" } th { "Contract" } th { "Limits" } th { "Network" } th { "Config keys" } th { "sha256" } } }
                        tbody { @for p in &s.plugins {
                            tr {
                                td data-label="Plugin" { strong { (p.id) } " " span.muted { (p.version) } }
                                td data-label="Kind" { (p.kind) }
                                td data-label="Contract" { code { (p.api) } }
                                td data-label="Limits" { (p.timeout_ms) " ms · " (p.memory_mb) " MB" }
                                td data-label="Network" { @if p.outbound.is_empty() { span.muted { "none" } } @else { @for o in &p.outbound { code { (o) } " " } } }
                                td data-label="Config keys" { @if p.config_keys.is_empty() { span.muted { "none" } } @else { @for k in &p.config_keys { span.tag { (k) } } } }
                                td data-label="sha256" { span.mono.small title=(p.sha256) { (p.sha256.chars().take(12).collect::<String>()) "…" } }
                            }
                        } }
                    } }
                }
            }
            h2 { "Recent failures" }
            @if failures.is_empty() {
                p.muted { "No plugin call has failed since the server started." }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "When" } th { "Plugin" } th { "Kind" } th { "How" } } }
                    tbody { @for f in failures {
                        tr {
                            td data-label="When" { (when(f.at)) }
                            td data-label="Plugin" { (f.plugin) }
                            td data-label="Kind" { (f.kind) }
                            td data-label="How" { span.state.state-failed { (f.outcome) } }
                        }
                    } }
                } }
            }
        },
    )
}

pub(super) fn keys(v: &Visitor, keys: &[KeyInfo], created: Option<&(String, String)>) -> Markup {
    layout(
        v,
        "keys",
        "API keys",
        html! {
            h1 { "API keys" }
            p.sub { "Keys identify agents and command-line tools. You see the keys whose every role you could grant." }
            @if let Some((token, id)) = created {
                (shown_once(&format!("Key {id} created."), "Copy it now: it is shown once, never again.", token))
            }
            div.table-wrap { table.stack {
                thead { tr { th { "Id" } th { "Agent" } th { "Type" } th { "Roles" } th { "Created" } th { "Expires" } th { "Status" } th {} } }
                tbody { @for k in keys {
                    @let f = &k.key;
                    tr {
                        td data-label="Id" { code { (f.id) } }
                        td data-label="Agent" { (f.agent_id) }
                        td data-label="Type" { (f.agent_type) }
                        td data-label="Roles" { (crate::auth::describe(&f.grants)) }
                        td data-label="Created" { (when(f.created_at)) " by " (f.created_by) }
                        td data-label="Expires" { (f.expires_at.map(when).unwrap_or_else(|| "never".into())) }
                        td data-label="Status" { span class={ "state state-" (k.status) } { (k.status) } }
                        td { @if k.status == "active" {
                            form.inline method="post" action={ "/console/keys/" (f.id) "/revoke" } {
                                (csrf(v))
                                button.danger type="submit" aria-label={ "Revoke key " (f.id) } { "Revoke" }
                            }
                        } }
                    }
                } }
            } }
            h2 { "New key" }
            div.panel {
                form.stack method="post" action="/console/keys" {
                    (csrf(v))
                    label { "Agent id" input type="text" name="agent_id" required placeholder="research-bot"; }
                    label { "Agent type" input type="text" name="agent_type" required placeholder="assistant"; }
                    label { "Roles (PATTERN=ROLE, comma-separated)" input type="text" name="roles" required placeholder="team-a=writer, shared-*=reader"; }
                    label { "Expires after days (optional)" input type="number" name="expires_days" min="1" max="3650"; }
                    div.actions { button type="submit" { "Create key" } }
                }
            }
        },
    )
}

pub(super) fn users(v: &Visitor, users: &[UserInfo], link: Option<&(String, String)>) -> Markup {
    layout(
        v,
        "users",
        "Users",
        html! {
            h1 { "Users" }
            p.sub { "People who sign in to this console (global admins manage them). Their agent type is " code { "human" } "; what they do is recorded as " code { "console:NAME" } "." }
            @if let Some((name, url)) = link {
                (shown_once(&format!("Sign-in link for {name}."), "It works once, for a short time; send it privately.", url))
            }
            div.table-wrap { table.stack {
                thead { tr { th { "Name" } th { "Roles" } th { "Password" } th { "Created" } th { "Status" } th {} } }
                tbody { @for u in users {
                    tr {
                        td data-label="Name" { strong { (u.name) } }
                        td data-label="Roles" { (crate::auth::describe(&u.grants)) }
                        td data-label="Password" { @if u.has_password { "set" } @else { span.muted { "none (links only)" } } }
                        td data-label="Created" { (when(u.created_at)) " by " (u.created_by) }
                        td data-label="Status" { span class={ "state state-" (u.status) } { (u.status) } }
                        td { @if u.status == "active" {
                            div.actions {
                                form.inline method="post" action={ "/console/users/" (u.name) "/link" } {
                                    (csrf(v)) button.quiet type="submit" { "Sign-in link" }
                                }
                                @if u.name != v.user.name {
                                    form.inline method="post" action={ "/console/users/" (u.name) "/disable" } {
                                        (csrf(v)) button.danger type="submit" aria-label={ "Disable " (u.name) } { "Disable" }
                                    }
                                }
                            }
                        } }
                    }
                } }
            } }
            h2 { "New user" }
            div.panel {
                form.stack method="post" action="/console/users" {
                    (csrf(v))
                    label { "Name" input type="text" name="name" required placeholder="alice@example.com"; }
                    label { "Roles (PATTERN=ROLE, comma-separated)" input type="text" name="roles" required placeholder="team-a=reader"; }
                    label { "Password (optional: at least 12 characters; or send a sign-in link)" input type="password" name="password" autocomplete="new-password"; }
                    div.actions { button type="submit" { "Create user" } }
                }
            }
        },
    )
}

pub(super) fn account(
    v: &Visitor,
    ok: Option<&str>,
    error: Option<&str>,
    connections: Option<&[crate::auth::oauth::Connection]>,
) -> Markup {
    let s = &v.session;
    layout(
        v,
        "",
        "Your account",
        html! {
            h1 { (v.user.name) }
            (flash(ok))
            @if let Some(e) = error { div.flash.bad role="alert" { (e) } }
            div.panel {
                dl.facts {
                    dt { "Roles" } dd { (crate::auth::describe(&v.user.grants)) }
                    dt { "Signed in" } dd { (when(s.created_at)) " with " (s.method) @if let Some(src) = &s.source { " from " (src) } }
                }
            }
            h2 { "Change your password" }
            div.panel {
                form.stack method="post" action="/console/account/password" {
                    (csrf(v))
                    @if v.user.password.is_some() {
                        label { "Current password" input type="password" name="current" autocomplete="current-password" required; }
                    }
                    label { "New password (at least 12 characters)" input type="password" name="password" autocomplete="new-password" required minlength="12"; }
                    label { "New password again" input type="password" name="again" autocomplete="new-password" required minlength="12"; }
                    div.actions { button type="submit" { "Change password" } span.muted.small { "Every session of yours ends, this one too." } }
                }
            }
            @if let Some(list) = connections {
                h2 { "Connected apps" }
                div.panel {
                    @if list.is_empty() {
                        p.muted { "No MCP client (Claude, ChatGPT, …) is connected as you." }
                    } @else {
                        div.table-wrap { table.stack {
                            thead { tr { th { "App" } th { "May reach" } th { "Allowed" } th { "Last renewed" } th { "" } } }
                            tbody {
                                @for c in list {
                                    tr {
                                        td data-label="App" { (c.client_name) }
                                        td data-label="May reach" { (crate::auth::describe(&c.grants)) " (" (crate::auth::oauth::scope_string(&c.scopes)) ")" }
                                        td data-label="Allowed" { (when(c.created_at)) }
                                        td data-label="Last renewed" { (relative(c.renewed_at)) }
                                        td {
                                            form.inline method="post" action=(format!("/console/account/connections/{}/disconnect", c.id)) {
                                                (csrf(v))
                                                button.danger type="submit" { "Disconnect" }
                                            }
                                        }
                                    }
                                }
                            }
                        } }
                    }
                }
            }
            h2 { "Sessions" }
            div.panel {
                form method="post" action="/console/sign-out-everywhere" {
                    (csrf(v))
                    div.actions { button.danger type="submit" { "Sign out everywhere" } span.muted.small { "Ends every session of yours, on every device, and disconnects every app." } }
                }
            }
        },
    )
}

/// The consent page of an OAuth authorization request: which app, where
/// the answer goes (large), what it asks, which of the person's roles it
/// gets. `params`: the request, carried through the form unchanged.
pub(super) fn consent(
    v: &Visitor,
    auth: &crate::service::oauth::Authorization,
    params: &[(&str, &str)],
) -> Markup {
    use crate::auth::oauth::{ClientKind, redirect_host, scope_cap};
    let host = redirect_host(&auth.redirect_uri);
    let cap = scope_cap(&auth.scopes).unwrap_or(Role::Reader);
    let unverified = auth.client.kind == ClientKind::Registered;
    bare(
        "Allow access",
        html! {
            div.panel.consent {
                h1 { "Allow " q { (auth.client.name) } " to use your memories?" }
                @if unverified {
                    p.muted.small { "This app registered itself: memhost has not checked its name." }
                }
                div.flash.warn role="note" {
                    "After you answer, your browser goes to "
                    strong.host { (host) }
                    ". Allow only if you started this from there."
                }
                p { "Signed in as " strong { (v.user.name) } ". It asks to:" }
                ul {
                    @for s in &auth.scopes { li { (s.describe()) } }
                }
                form.stack method="post" action="/console/oauth/authorize" {
                    (csrf(v))
                    @for (name, value) in params {
                        input type="hidden" name=(name) value=(value);
                    }
                    fieldset {
                        legend { "What it may reach (at most your own role)" }
                        @for g in &v.user.grants {
                            @let most = g.role.min(cap);
                            // Admin is never the default: giving it is a choice.
                            @let default = most.min(Role::Writer);
                            label {
                                code { (g.pattern) }
                                select name=(format!("role:{}", g.pattern)) {
                                    option value="none" { "not shared" }
                                    @for r in [Role::Reader, Role::Writer, Role::Admin] {
                                        @if r <= most {
                                            option value=(r.as_str()) selected[r == default] { (r.as_str()) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.muted.small {
                        "It acts as you (" (v.user.name) "), typed as an assistant: it can never approve a change that needs a person. Disconnect it any time by signing out everywhere."
                    }
                    div.actions {
                        button type="submit" name="decision" value="allow" { "Allow" }
                        button.quiet type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            }
        },
    )
}

/// A page that sends the browser on to `to` (this server) from a page of
/// this server, so the session cookie (`SameSite=Strict`) is sent: a
/// navigation that began on another site gets no cookie.
pub(super) fn hop(to: &str) -> Markup {
    document(
        "Continue",
        html! {
            meta http-equiv="refresh" content=(format!("0;url={to}"));
            main id="main" {
                div.signin {
                    div.panel {
                        h1 { "Continue to memhost" }
                        p { a href=(to) { "Continue" } }
                    }
                }
            }
        },
    )
}
