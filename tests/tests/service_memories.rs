//! The service layer over a real LMDB store and the real redact-pii plugin:
//! namespaces, store/get/list/forget, idempotent duplicates, TTL, the three
//! redaction modes, and that nothing readable reaches the database file.

use std::sync::Arc;

use crate::common::*;
use memhost::auth::Principal;
use memhost::crypto::MasterKey;
use memhost::plugins::PluginSettings;

use memhost::service::{
    Filters, LIST_SCAN_BUDGET, ListQuery, MemoryPatch, NamespaceSettings, NewMemory, RedactionMode,
    Service, ServiceError,
};
use memhost::store::keyring::Keyring;
use memhost::store::{Store, StoreOptions};

/// The operator: every role everywhere (roles are tested in `access`).
fn op() -> Principal {
    Principal::operator()
}

const CANARY: &str = "canary-7f3a9c-zebra-quokka";

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    service: Service,
    plugins: Arc<memhost::plugins::PluginRegistry>,
}

fn fixture(with_redactor: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), &StoreOptions::default()).unwrap();
    let keyring = Arc::new(Keyring::open(&store, MasterKey::generate()).unwrap());
    let plugins = Arc::new(registry(PluginSettings::default(), None));
    // Every change is decided by the namespace's policy plugin.
    let mut loaded = vec![staged("policy-standard")];
    if with_redactor {
        loaded.push(staged("redact-pii"));
    }
    plugins.apply(loaded).unwrap();
    Fixture {
        dir,
        store: store.clone(),
        service: Service::new(store, keyring, plugins.clone()).unwrap(),
        plugins,
    }
}

fn settings(mode: RedactionMode) -> NamespaceSettings {
    NamespaceSettings {
        redaction: mode,
        ..NamespaceSettings::default()
    }
}

/// Create namespace `name` with no extractor (and redaction off).
fn words_only(s: &Service, name: &str) {
    s.create_namespace(
        &op(),
        name,
        NamespaceSettings {
            extractor: Some("none".into()),
            ..settings(RedactionMode::Off)
        },
    )
    .unwrap();
}

fn memory(content: &str) -> NewMemory {
    NewMemory {
        content: content.into(),
        ..NewMemory::default()
    }
}

fn db_bytes(f: &Fixture) -> Vec<u8> {
    std::fs::read(f.dir.path().join("db/data.mdb")).unwrap()
}

/// Rows in the memories table (head and history rows).
fn db_rows(f: &Fixture) -> usize {
    f.store.rows(|t| t.memories, &[], |_| true).unwrap().len()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn namespaces_are_explicit_named_and_unique() {
    let f = fixture(true);
    let s = &f.service;
    s.create_namespace(&op(), "team-a", NamespaceSettings::default())
        .unwrap();
    assert!(matches!(
        s.create_namespace(&op(), "team-a", NamespaceSettings::default()),
        Err(ServiceError::Conflict(_))
    ));
    assert!(matches!(
        s.create_namespace(&op(), "Team A", NamespaceSettings::default()),
        Err(ServiceError::Invalid { field, .. }) if field == "name"
    ));
    s.create_namespace(&op(), "team-b", settings(RedactionMode::Off))
        .unwrap();
    let names: Vec<_> = s
        .namespaces(&op())
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["team-a", "team-b"]);
    // Unknown namespaces are errors, never empty results.
    assert_eq!(
        s.list(&op(), "nope", &ListQuery::default()).unwrap_err(),
        ServiceError::NoNamespace("nope".into())
    );
    assert_eq!(
        s.store(&op(), "nope", memory("x")).unwrap_err(),
        ServiceError::NoNamespace("nope".into())
    );
    // Names are sealed too.
    assert!(!contains(&db_bytes(&f), "team-a"));
}

#[test]
fn store_redacted_get_duplicate_forget() {
    let f = fixture(true);
    let s = &f.service;
    s.create_namespace(&op(), "notes", NamespaceSettings::default())
        .unwrap();
    let text = format!("{CANARY}: mail ada@example.com, card 4111 1111 1111 1111");
    let mut new = memory(&text);
    new.title = Some(format!("title {CANARY}"));
    new.tags = vec![format!("tag-{CANARY}")];
    new.metadata = serde_json::json!({ "note": CANARY })
        .as_object()
        .unwrap()
        .clone();
    let stored = s.store(&op(), "notes", new.clone()).unwrap();
    assert!(stored.created);
    let m = &stored.memory;
    assert_eq!(m.content, format!("{CANARY}: mail [EMAIL], card [CARD]"));
    assert_eq!(m.redactions.get("email"), Some(&1));
    assert_eq!(m.redactions.get("card"), Some(&1));
    assert_eq!((m.version, m.agent_id.as_str()), (1, "operator"));
    assert_eq!(&s.get(&op(), "notes", &m.id).unwrap(), m);

    // The same content again: the existing memory, not a duplicate.
    let again = s.store(&op(), "notes", new).unwrap();
    assert!(!again.created);
    assert_eq!(again.memory.id, m.id);
    assert_eq!(
        s.list(&op(), "notes", &ListQuery::default())
            .unwrap()
            .memories
            .len(),
        1
    );

    // Nothing readable in the database file: not the canary in any field,
    // not the PII.
    let raw = db_bytes(&f);
    for needle in [CANARY, "ada@example.com", "4111 1111", "[EMAIL]"] {
        assert!(!contains(&raw, needle), "{needle} is readable in data.mdb");
    }

    s.forget(&op(), "notes", &m.id).unwrap();
    assert!(matches!(
        s.get(&op(), "notes", &m.id),
        Err(ServiceError::NoMemory { .. })
    ));
    assert!(s.store(&op(), "notes", memory(&text)).unwrap().created);
}

#[test]
fn egress_mode_stores_as_written_and_redacts_on_read() {
    let f = fixture(true);
    let s = &f.service;
    s.create_namespace(&op(), "raw", settings(RedactionMode::Egress))
        .unwrap();
    s.create_namespace(&op(), "plain", settings(RedactionMode::Off))
        .unwrap();
    let text = "reach me at bob@example.org";
    let stored = s.store(&op(), "raw", memory(text)).unwrap();
    assert_eq!(stored.memory.redactions.get("email"), Some(&1));
    assert_eq!(
        s.get(&op(), "raw", &stored.memory.id).unwrap().content,
        "reach me at [EMAIL]"
    );
    let page = s.list(&op(), "raw", &ListQuery::default()).unwrap();
    assert_eq!(page.memories[0].content, "reach me at [EMAIL]");
    let off = s.store(&op(), "plain", memory(text)).unwrap();
    assert_eq!(s.get(&op(), "plain", &off.memory.id).unwrap().content, text);
    assert!(!contains(&db_bytes(&f), "bob@example.org"));
}

#[test]
fn a_missing_redactor_refuses_the_write_and_stores_nothing() {
    let f = fixture(true);
    let s = &f.service;
    s.create_namespace(&op(), "notes", NamespaceSettings::default())
        .unwrap();
    // Its redactor is unloaded after the namespace was made.
    f.plugins.apply(vec![staged("policy-standard")]).unwrap();
    // A new namespace cannot name it: refused now, not at its first write.
    let err = s
        .create_namespace(&op(), "later", NamespaceSettings::default())
        .unwrap_err();
    assert!(
        matches!(&err, ServiceError::Invalid { field, .. } if field == "redactor"),
        "{err}"
    );
    let err = s.store(&op(), "notes", memory("hello")).unwrap_err();
    assert!(
        matches!(&err, ServiceError::Redaction(m) if m.contains("redact-pii")),
        "{err}"
    );
    assert!(
        s.list(&op(), "notes", &ListQuery::default())
            .unwrap()
            .memories
            .is_empty()
    );
}

#[test]
fn a_filter_that_matches_nothing_costs_a_bounded_scan_per_page() {
    let f = fixture(false);
    let s = &f.service;
    s.create_namespace(&op(), "big", settings(RedactionMode::Off))
        .unwrap();
    let total = LIST_SCAN_BUDGET + 300;
    // Stored from several threads: their writes share commits.
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                for i in (t..total).step_by(8) {
                    s.store(&op(), "big", memory(&format!("entry {i}")))
                        .unwrap();
                }
            });
        }
    });
    let never = |filters: Filters| ListQuery {
        filters,
        limit: Some(1),
        ..ListQuery::default()
    };
    // A tag nobody has: each page opens at most the budget, ends short and
    // hands back a cursor; following it reaches the end.
    let mut q = never(Filters {
        tags: vec!["nope".into()],
        ..Filters::default()
    });
    let mut pages = 0;
    loop {
        let page = s.list(&op(), "big", &q).unwrap();
        assert!(page.memories.is_empty());
        pages += 1;
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    // Time filters seek: before the first memory or after the last, the
    // answer is at once empty and final.
    for filters in [
        Filters {
            until: Some(0),
            ..Filters::default()
        },
        Filters {
            since: Some(memhost::clock::now_ms() + 3_600_000),
            ..Filters::default()
        },
    ] {
        let page = s.list(&op(), "big", &never(filters)).unwrap();
        assert!(page.memories.is_empty() && page.next_cursor.is_none());
    }
}

#[test]
fn list_pages_filters_and_ttl() {
    let f = fixture(false);
    let s = &f.service;
    s.create_namespace(&op(), "log", settings(RedactionMode::Off))
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut m = memory(&format!("entry {i}"));
        m.tags = if i % 2 == 0 {
            vec!["even".into()]
        } else {
            vec!["odd".into()]
        };
        ids.push(s.store(&op(), "log", m).unwrap().memory.id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(
                &op(),
                "log",
                &ListQuery {
                    limit: Some(2),
                    cursor,
                    ..ListQuery::default()
                },
            )
            .unwrap();
        seen.extend(page.memories.iter().map(|m| m.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids, "pages must cover everything once, oldest first");
    let even = s
        .list(
            &op(),
            "log",
            &ListQuery {
                filters: memhost::service::Filters {
                    tags: vec!["even".into()],
                    ..Default::default()
                },
                ..ListQuery::default()
            },
        )
        .unwrap();
    assert_eq!(even.memories.len(), 3);

    let mut short = memory("gone soon");
    short.ttl_seconds = Some(1);
    let id = s.store(&op(), "log", short).unwrap().memory.id;
    assert!(s.get(&op(), "log", &id).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(matches!(
        s.get(&op(), "log", &id),
        Err(ServiceError::NoMemory { .. })
    ));
    assert_eq!(
        s.list(&op(), "log", &ListQuery::default())
            .unwrap()
            .memories
            .len(),
        5
    );
    // The sweep reclaims it (and only it); a second sweep finds nothing.
    let before = db_rows(&f);
    assert_eq!(s.purge_expired().unwrap(), 1);
    assert_eq!(s.purge_expired().unwrap(), 0);
    assert_eq!(db_rows(&f), before - 1);
    assert_eq!(
        s.list(&op(), "log", &ListQuery::default())
            .unwrap()
            .memories
            .len(),
        5
    );
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let f = fixture(false);
    let s = &f.service;
    s.create_namespace(&op(), "n", settings(RedactionMode::Off))
        .unwrap();
    let cases = [
        (memory(""), "content"),
        (
            NewMemory {
                importance: Some(2.0),
                ..memory("x")
            },
            "importance",
        ),
        (
            NewMemory {
                ttl_seconds: Some(0),
                ..memory("x")
            },
            "ttl_seconds",
        ),
        (
            NewMemory {
                tags: vec!["".into()],
                ..memory("x")
            },
            "tags",
        ),
    ];
    for (input, field) in cases {
        match s.store(&op(), "n", input).unwrap_err() {
            ServiceError::Invalid { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let big = memory(&"x".repeat(s.limits().content_chars + 1));
    assert!(
        matches!(s.store(&op(), "n", big), Err(ServiceError::TooLarge { field, .. }) if field == "content")
    );
    assert!(
        s.list(&op(), "n", &ListQuery::default())
            .unwrap()
            .memories
            .is_empty()
    );
}

#[test]
fn updates_make_versions_and_keep_history() {
    let f = fixture(true);
    let s = &f.service;
    s.create_namespace(&op(), "n", NamespaceSettings::default())
        .unwrap();
    let first = s
        .store(&op(), "n", memory("call me at 555-0100"))
        .unwrap()
        .memory;
    let patch = MemoryPatch {
        content: Some("now write to eve@example.com".into()),
        tags: Some(vec!["contact".into()]),
        ..MemoryPatch::default()
    };
    let second = s.update(&op(), "n", &first.id, patch).unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.content, "now write to [EMAIL]");
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.redactions.get("email"), Some(&1));
    assert_eq!(s.get(&op(), "n", &first.id).unwrap(), second);
    let (history, next) = s.history(&op(), "n", &first.id, 0, None).unwrap();
    assert_eq!(
        history.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(next, None);
    assert_eq!(history[0].content, "call me at [PHONE]");
    // Paged: however many versions, one page is read at a time.
    for n in 3..=7 {
        let patch = MemoryPatch {
            content: Some(format!("version {n}")),
            ..MemoryPatch::default()
        };
        s.update(&op(), "n", &first.id, patch).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (page, next) = s.history(&op(), "n", &first.id, after, Some(2)).unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|m| m.version));
        match next {
            Some(v) => after = v,
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    let second = s.get(&op(), "n", &first.id).unwrap();
    // The list shows the current version only.
    let page = s.list(&op(), "n", &ListQuery::default()).unwrap();
    assert_eq!(page.memories, vec![second.clone()]);
    // Forget removes every version.
    s.forget(&op(), "n", &first.id).unwrap();
    assert!(matches!(
        s.history(&op(), "n", &first.id, 0, None),
        Err(ServiceError::NoMemory { .. })
    ));
    assert!(!contains(&db_bytes(&f), "eve@example.com"));
}

#[test]
fn deleting_a_namespace_destroys_its_key_and_rows_and_spares_the_others() {
    let f = fixture(false);
    let s = &f.service;
    s.create_namespace(&op(), "doomed", settings(RedactionMode::Off))
        .unwrap();
    s.create_namespace(&op(), "kept", settings(RedactionMode::Off))
        .unwrap();
    let mut doomed = Vec::new();
    for i in 0..5 {
        let m = s
            .store(&op(), "doomed", memory(&format!("doomed {i}")))
            .unwrap();
        s.update(
            &op(),
            "doomed",
            &m.memory.id,
            MemoryPatch {
                tags: Some(vec!["v2".into()]),
                ..MemoryPatch::default()
            },
        )
        .unwrap();
        doomed.push(m.memory.id);
    }
    let kept = s.store(&op(), "kept", memory("kept")).unwrap().memory;
    let keys_before = f.store.rows(|t| t.keys, &[], |_| true).unwrap().len();
    // Five heads, five history rows, one kept memory.
    assert_eq!(db_rows(&f), 11);

    assert_eq!(s.delete_namespace(&op(), "doomed").unwrap(), 5);
    assert_eq!(db_rows(&f), 1, "only the other namespace's memory remains");
    assert_eq!(
        f.store.rows(|t| t.keys, &[], |_| true).unwrap().len(),
        keys_before - 1,
        "its data key is gone"
    );
    assert_eq!(
        s.get(&op(), "doomed", &doomed[0]).unwrap_err(),
        ServiceError::NoNamespace("doomed".into())
    );
    assert_eq!(s.get(&op(), "kept", &kept.id).unwrap(), kept);
    assert_eq!(
        s.delete_namespace(&op(), "doomed").unwrap_err(),
        ServiceError::NoNamespace("doomed".into())
    );
    // The name can be used again, for a new, empty namespace.
    s.create_namespace(&op(), "doomed", settings(RedactionMode::Off))
        .unwrap();
    assert!(
        s.list(&op(), "doomed", &ListQuery::default())
            .unwrap()
            .memories
            .is_empty()
    );
    // The identical content stores afresh: no dedup row survived.
    assert!(
        s.store(&op(), "doomed", memory("doomed 0"))
            .unwrap()
            .created
    );
}

/// Picks a table.
type Pick = fn(&memhost::store::Tables) -> memhost::store::Table;

/// Every row of every table that holds namespace data, as (table, key).
fn all_rows(f: &Fixture) -> Vec<(&'static str, Vec<u8>)> {
    let tables: [(&str, Pick); 6] = [
        ("memories", |t| t.memories),
        ("dedup", |t| t.dedup),
        ("terms", |t| t.terms),
        ("vectors", |t| t.vectors),
        ("segments", |t| t.segments),
        ("jobs", |t| t.jobs),
    ];
    tables
        .iter()
        .flat_map(|(name, pick)| {
            f.store
                .rows(*pick, &[], |_| true)
                .unwrap()
                .into_iter()
                .map(move |(k, _)| (*name, k))
        })
        .collect()
}

#[test]
fn rows_no_namespace_owns_are_collected_and_nothing_else() {
    let f = fixture(false);
    let s = &f.service;
    let kept = s
        .create_namespace(&op(), "kept", settings(RedactionMode::Off))
        .unwrap();
    let m = s
        .store(&op(), "kept", memory("the falcon nests on the tower"))
        .unwrap()
        .memory;
    let now = s.reindex_namespace(&op(), "kept", Some("none")).unwrap();
    assert_eq!(now.index_generation, kept.index_generation + 1);
    let segment_row = |generation: u32| {
        [
            memhost::index::segment::prefix(&kept.id, generation).as_slice(),
            &[0; 12],
        ]
        .concat()
    };
    // A segment of the current generation is kept.
    let current = segment_row(now.index_generation);
    f.store
        .write_blocking(move |txn, t| {
            txn.put(
                t.segments,
                &current,
                b"x",
                memhost::store::WriteFlags::empty(),
            )?;
            Ok(())
        })
        .unwrap();
    let before = all_rows(&f);
    // What a delete interrupted by a crash leaves (its namespace row and
    // key already gone), and a segment a build finished writing after the
    // reindex.
    let gone = [0x42u8; 16];
    let leftovers = vec![
        ("segments", segment_row(kept.index_generation)),
        ("memories", [gone.as_slice(), &[1; 16]].concat()),
        ("dedup", [gone.as_slice(), &[2; 32]].concat()),
        ("terms", [gone.as_slice(), &[3; 48]].concat()),
        ("vectors", [gone.as_slice(), &[4; 16]].concat()),
        (
            "jobs",
            [memhost::index::vector::JOB_PREFIX, &gone, &[5; 16]].concat(),
        ),
        ("segments", [gone.as_slice(), &[0; 4], &[0; 12]].concat()),
    ];
    let rows = leftovers.clone();
    f.store
        .write_blocking(move |txn, t| {
            for (table, k) in &rows {
                let db = match *table {
                    "memories" => t.memories,
                    "dedup" => t.dedup,
                    "terms" => t.terms,
                    "vectors" => t.vectors,
                    "jobs" => t.jobs,
                    _ => t.segments,
                };
                txn.put(db, k, b"x", memhost::store::WriteFlags::empty())?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(all_rows(&f).len(), before.len() + leftovers.len());
    assert_eq!(s.collect_leftovers().unwrap(), leftovers.len());
    assert_eq!(all_rows(&f), before, "only the leftovers went");
    assert_eq!(s.get(&op(), "kept", &m.id).unwrap().content, m.content);
    assert_eq!(s.collect_leftovers().unwrap(), 0);
}

#[test]
fn a_reindex_replaces_vectors_in_chunks_while_other_namespaces_keep_writing() {
    let f = fixture(false);
    f.plugins
        .apply(vec![staged("policy-standard"), staged("embed-hashing")])
        .unwrap();
    // Small chunks, so a namespace a test can fill takes many writes.
    let s = f.service.clone().with_reindex_chunk(20);
    s.create_namespace(
        &op(),
        "big",
        NamespaceSettings {
            redaction: RedactionMode::Off,
            embedder: Some("embed-hashing".into()),
            ..NamespaceSettings::default()
        },
    )
    .unwrap();
    s.create_namespace(&op(), "other", settings(RedactionMode::Off))
        .unwrap();
    const N: usize = 1600;
    std::thread::scope(|scope| {
        for part in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in (part..N).step_by(4) {
                    s.store(&op(), "big", memory(&format!("note {i} about the heron")))
                        .unwrap();
                }
            });
        }
    });
    while s.index_pending(512, 0, 1).unwrap().1 > 0 {}
    let vector_recall = |s: &Service| {
        s.recall(
            &op(),
            "big",
            &memhost::service::recall::RecallQuery {
                query: "note 7 about the heron".into(),
                k: Some(5),
                mode: memhost::service::recall::RecallMode::Vector,
                ..Default::default()
            },
        )
        .unwrap()
        .len()
    };
    assert_eq!(vector_recall(&s), 5, "embedded before the reindex");

    // Another tenant writes for as long as the reindex runs, counting the
    // writes that committed while the reindex was replacing vectors.
    let pass_under_way = || {
        let prefix = memhost::service::indexing::PASS_PREFIX;
        !f.store
            .rows(|t| t.jobs, prefix, |k| k.starts_with(prefix))
            .unwrap()
            .is_empty()
    };
    let running = std::sync::atomic::AtomicBool::new(true);
    let (reindex, written_meanwhile) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let (mut written, mut during) = (0, 0);
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                s.store(&op(), "other", memory(&format!("other {written}")))
                    .unwrap();
                written += 1;
                during += usize::from(pass_under_way());
            }
            during
        });
        // Let the writer get going first.
        while s
            .list(&op(), "other", &ListQuery::default())
            .unwrap()
            .memories
            .is_empty()
        {
            std::thread::yield_now();
        }
        let reindex = s.reindex_namespace(&op(), "big", None).unwrap();
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        (reindex, writer.join().unwrap())
    });
    assert_eq!(reindex.queued, N, "every memory is queued again");
    // One write over the whole namespace held every other write back until
    // it committed, and left no pass to be seen; in chunks of 20 (80
    // writes), the other namespace's writes go between them.
    assert!(
        written_meanwhile >= 5,
        "only {written_meanwhile} writes to another namespace committed while the reindex replaced vectors"
    );
    let progress = s.index_progress(&op(), "big").unwrap();
    assert_eq!(progress.queued, N);
    // The old vectors are gone with the pass, not searched alongside new ones.
    assert_eq!(vector_recall(&s), 0, "nothing re-embedded yet");
    while s.index_pending(512, 0, 1).unwrap().1 > 0 {}
    assert_eq!(s.index_progress(&op(), "big").unwrap().queued, 0);
    assert_eq!(vector_recall(&s), 5, "re-embedded");
    // A reindex leaves no pass behind: a restart has nothing to finish.
    assert_eq!(s.resume_reindexes().unwrap(), 0);
}

#[test]
fn the_extractor_names_who_and_what_in_the_background_sealed_and_kept_current() {
    let f = fixture(true);
    f.plugins
        .apply(vec![
            staged("policy-standard"),
            staged("redact-pii"),
            staged("extract-entities"),
        ])
        .unwrap();
    let s = &f.service;
    let ns = s
        .create_namespace(&op(), "team", settings(RedactionMode::StoreRedacted))
        .unwrap();
    assert_eq!(ns.settings.extractor.as_deref(), Some("extract-entities"));
    let id = s
        .store(
            &op(),
            "team",
            memory("Ada Lovelace of the Zebrafish Institute mailed ada@example.org about PROJ-7"),
        )
        .unwrap()
        .memory
        .id;
    let entities = |s: &Service| -> Vec<(String, String)> {
        s.get(&op(), "team", &id)
            .unwrap()
            .entities
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect()
    };
    assert!(entities(s).is_empty(), "nothing before the worker ran");
    assert_eq!(s.extract_pending(100).unwrap(), (1, 1));
    // The extractor sees what the namespace stores: the address is redacted.
    assert_eq!(
        entities(s),
        [
            ("Ada Lovelace", "name"),
            ("Zebrafish Institute", "organization"),
            ("PROJ-7", "id"),
        ]
        .map(|(n, k)| (n.to_string(), k.to_string()))
    );
    let raw = db_bytes(&f);
    assert!(!contains(&raw, "Zebrafish") && !contains(&raw, "organization"));

    // A new version shows no entities until they are extracted from it.
    s.update(
        &op(),
        "team",
        &id,
        MemoryPatch {
            content: Some("Grace Hopper took over PROJ-7".into()),
            ..MemoryPatch::default()
        },
    )
    .unwrap();
    assert!(entities(s).is_empty());
    assert_eq!(s.extract_pending(100).unwrap(), (1, 1));
    assert_eq!(
        entities(s),
        [("Grace Hopper", "name"), ("PROJ-7", "id")].map(|(n, k)| (n.to_string(), k.to_string()))
    );

    // Forgetting takes what was extracted with it.
    s.forget(&op(), "team", &id).unwrap();
    assert!(
        f.store
            .rows(|t| t.entities, &[], |_| true)
            .unwrap()
            .is_empty()
    );

    // "none" extracts nothing; an extractor that is not loaded is refused.
    words_only(s, "plain");
    s.store(&op(), "plain", memory("Ada Lovelace again"))
        .unwrap();
    assert_eq!(s.extract_pending(100).unwrap(), (0, 0));
    let err = s
        .create_namespace(
            &op(),
            "odd",
            NamespaceSettings {
                extractor: Some("extract-nothing".into()),
                ..settings(RedactionMode::Off)
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("extract-nothing"), "{err}");
}

#[test]
fn recall_filters_by_the_entities_a_memory_names() {
    let f = fixture(false);
    f.plugins
        .apply(vec![staged("policy-standard"), staged("extract-entities")])
        .unwrap();
    let s = &f.service;
    s.create_namespace(&op(), "team", settings(RedactionMode::Off))
        .unwrap();
    let mut ids = Vec::new();
    for text in [
        "Ada Lovelace reviewed the engine notes",
        "Grace Hopper reviewed the compiler notes",
        "Ada Lovelace and Grace Hopper reviewed the release notes together",
    ] {
        ids.push(s.store(&op(), "team", memory(text)).unwrap().memory.id);
    }
    s.extract_pending(100).unwrap();
    let recall = |entities: &[&str], any: bool| {
        let mut found: Vec<_> = s
            .recall(
                &op(),
                "team",
                &memhost::service::recall::RecallQuery {
                    query: "reviewed notes".into(),
                    entities: entities.iter().map(|e| e.to_string()).collect(),
                    entities_match: if any {
                        memhost::service::recall::EntitiesMatch::Any
                    } else {
                        memhost::service::recall::EntitiesMatch::All
                    },
                    ..Default::default()
                },
            )
            .unwrap()
            .into_iter()
            .map(|h| h.memory.id)
            .collect();
        found.sort();
        found
    };
    assert_eq!(recall(&[], false), ids, "no filter: all three");
    assert_eq!(recall(&["ada  LOVELACE"], false), [ids[0], ids[2]]);
    assert_eq!(recall(&["Ada Lovelace", "Grace Hopper"], false), [ids[2]]);
    assert_eq!(recall(&["Ada Lovelace", "Grace Hopper"], true), ids);
    assert!(recall(&["Charles Babbage"], false).is_empty());
    // What the namespace's memories name, with counts, a page at a time.
    let listed = |limit: u64| {
        let mut all = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let got = s
                .entities(&op(), "team", page.as_deref(), Some(limit))
                .unwrap();
            assert!(got.entities.len() <= limit as usize);
            all.extend(got.entities.into_iter().map(|e| (e.name, e.memories)));
            match got.next_page {
                Some(next) => page = Some(next),
                None => break,
            }
        }
        all.sort();
        all
    };
    let counted = |pairs: &[(&str, u32)]| -> Vec<(String, u32)> {
        pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    };
    assert_eq!(
        listed(100),
        counted(&[("Ada Lovelace", 2), ("Grace Hopper", 2)])
    );
    assert_eq!(listed(1), listed(100), "pages of one give the same");

    // A new version names what it names once extracted again; until then
    // it is not taken to name what the old text did.
    s.update(
        &op(),
        "team",
        &ids[0],
        MemoryPatch {
            content: Some("Charles Babbage reviewed the engine notes".into()),
            ..MemoryPatch::default()
        },
    )
    .unwrap();
    assert_eq!(recall(&["Ada Lovelace"], false), [ids[2]]);
    s.extract_pending(100).unwrap();
    assert_eq!(recall(&["Charles Babbage"], false), [ids[0]]);
    assert_eq!(
        listed(100),
        counted(&[
            ("Ada Lovelace", 1),
            ("Charles Babbage", 1),
            ("Grace Hopper", 2)
        ])
    );
    let err = s.entities(&op(), "team", Some("nope"), None).unwrap_err();
    assert!(err.to_string().contains("page"), "{err}");

    // Bad filters are refused, naming the field.
    words_only(s, "plain");
    for (ns, entities) in [
        ("plain", vec!["Ada".to_string()]),
        ("team", vec![" ".to_string()]),
        ("team", (0..21).map(|i| format!("e{i}")).collect()),
    ] {
        let err = s
            .recall(
                &op(),
                ns,
                &memhost::service::recall::RecallQuery {
                    query: "notes".into(),
                    entities,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("entities"), "{err}");
    }
}

#[test]
fn an_extractor_that_panics_or_times_out_leaves_the_memory_stored_and_searchable() {
    let f = fixture(false);
    let trap = crate::common::plugin_dir(
        f.dir.path(),
        "extract-trap",
        "extractor",
        &crate::common::fixture("extract-trap"),
        "[limits]\ntimeout_ms = 100",
    );
    f.plugins
        .apply(vec![
            staged("policy-standard"),
            staged("embed-hashing"),
            trap,
        ])
        .unwrap();
    let s = &f.service;
    s.create_namespace(
        &op(),
        "team",
        NamespaceSettings {
            extractor: Some("extract-trap".into()),
            embedder: Some("embed-hashing".into()),
            ..settings(RedactionMode::Off)
        },
    )
    .unwrap();
    let mut failed = Vec::new();
    for text in ["Ada said boom at the Launch", "Ada kept the Rotor spinning"] {
        failed.push(s.store(&op(), "team", memory(text)).unwrap().memory.id);
    }
    let good = s
        .store(&op(), "team", memory("Grace fixed the Compiler"))
        .unwrap()
        .memory
        .id;
    // All settled: one extracted, two skipped (not retried forever).
    assert_eq!(s.extract_pending(100).unwrap(), (3, 3));
    assert_eq!(s.extract_pending(100).unwrap(), (0, 0));
    let names: Vec<String> = s
        .get(&op(), "team", &good)
        .unwrap()
        .entities
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["Grace", "Compiler"]);
    while s.index_pending(100, 0, 1).unwrap().1 > 0 {}
    for (id, words) in failed.iter().zip(["boom launch", "rotor spinning"]) {
        assert!(s.get(&op(), "team", id).unwrap().entities.is_empty());
        // Still found by its words, and by meaning.
        for mode in [
            memhost::service::recall::RecallMode::Lexical,
            memhost::service::recall::RecallMode::Vector,
        ] {
            let hits = s
                .recall(
                    &op(),
                    "team",
                    &memhost::service::recall::RecallQuery {
                        query: words.into(),
                        mode,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(hits.first().map(|h| h.memory.id), Some(*id), "{mode:?}");
        }
    }
}
