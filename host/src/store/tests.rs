use super::testing::Postgres;
use super::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).unwrap()
}

fn get(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    store.read(|txn, t| get_in(txn, t.memories, key)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.commits();
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |txn, t| {
                    txn.put(t.memories, &i.to_be_bytes(), &b"v", WriteFlags::empty())?;
                    Ok(i)
                })
                .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), i as u32);
    }
    let commits = store.commits() - before;
    assert!(
        commits < 500,
        "{commits} commits for 500 concurrent writes: no group commit"
    );
    for i in 0..500u32 {
        assert_eq!(get(&store, &i.to_be_bytes()).as_deref(), Some(&b"v"[..]));
    }
}

#[test]
fn a_failing_write_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bad = store.write_blocking(|txn, t| {
        txn.put(t.memories, b"half", b"written", WriteFlags::empty())?;
        Err::<(), _>(StoreError::Rejected("changed my mind".into()))
    });
    assert!(matches!(bad, Err(StoreError::Rejected(m)) if m == "changed my mind"));
    store
        .write_blocking(|txn, t| txn.put(t.memories, b"good", b"yes", WriteFlags::empty()))
        .unwrap();
    assert_eq!(get(&store, b"half"), None);
    assert_eq!(get(&store, b"good").as_deref(), Some(&b"yes"[..]));
}

#[test]
fn a_full_map_grows_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            map_size: 256 << 10,
            max_map_size: 64 << 20,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let start = store.map_size();
    let value = vec![7u8; 4000];
    for i in 0..500u32 {
        let value = value.clone();
        store
            .write_blocking(move |txn, t| {
                txn.put(t.memories, &i.to_be_bytes(), &value, WriteFlags::empty())
            })
            .unwrap();
    }
    assert!(store.map_size() > start);
    assert_eq!(
        get(&store, &499u32.to_be_bytes()).map(|v| v.len()),
        Some(4000)
    );
}

#[test]
fn a_map_at_its_ceiling_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            map_size: 256 << 10,
            max_map_size: 256 << 10,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let value = vec![7u8; 100_000];
    let mut last = Ok(());
    for i in 0..10u32 {
        let value = value.clone();
        last = store.write_blocking(move |txn, t| {
            txn.put(t.memories, &i.to_be_bytes(), &value, WriteFlags::empty())
        });
        if last.is_err() {
            break;
        }
    }
    let err = last.unwrap_err();
    assert!(err.to_string().contains("max_map_size_mb"), "{err}");
}

#[test]
fn a_newer_schema_is_refused_and_data_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .write_blocking(|txn, t| {
                txn.put(
                    t.meta,
                    &META_SCHEMA,
                    &(SCHEMA_VERSION + 1).to_be_bytes(),
                    WriteFlags::empty(),
                )?;
                Ok(())
            })
            .unwrap();
        store.close();
    }
    let err = Store::open(dir.path(), &StoreOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("upgrade memhost"), "{err}");
}

#[test]
fn prefixes_lists_each_distinct_prefix_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keys: [&[u8]; 7] = [
        b"aa1",
        b"aa2",
        b"ab\xff",
        b"a\xff\xff1",
        b"a\xff\xff2",
        b"b",
        b"ba9",
    ];
    store
        .write_blocking(move |txn, t| {
            for k in keys {
                txn.put(t.memories, &k, b"v", WriteFlags::empty())?;
            }
            Ok(())
        })
        .unwrap();
    let two = store.prefixes(|t| t.memories, b"", 2).unwrap();
    // "b" is shorter than a prefix: skipped, not stopped at.
    assert_eq!(two, [&b"aa"[..], b"ab", b"a\xff", b"ba"]);
    let three = store.prefixes(|t| t.memories, b"a", 3).unwrap();
    assert_eq!(three, [&b"aa1"[..], b"aa2", b"ab\xff", b"a\xff\xff"]);
    assert!(store.prefixes(|t| t.memories, b"c", 2).unwrap().is_empty());
}

#[test]
fn a_compacted_copy_taken_during_writes_holds_what_was_acknowledged_and_leaves_out_free_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("live"));
    let big = vec![7u8; 4000];
    for i in 0..2000u32 {
        let v = big.clone();
        store
            .write_blocking(move |txn, t| {
                txn.put(t.memories, &i.to_be_bytes(), &v, WriteFlags::empty())?;
                Ok(())
            })
            .unwrap();
    }
    // Forget most: their pages become free, not smaller.
    for i in 0..1900u32 {
        store
            .write_blocking(move |txn, t| del_in(txn, t.memories, &i.to_be_bytes()))
            .unwrap();
    }
    // A writer goes on while the copy is taken.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 10_000..10_500u32 {
                store
                    .write_blocking(move |txn, t| {
                        txn.put(t.memories, &i.to_be_bytes(), b"late", WriteFlags::empty())?;
                        Ok(())
                    })
                    .unwrap();
            }
        })
    };
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    store.copy_compacted(&copy).unwrap();
    writer.join().unwrap();

    let size = |d: &Path| std::fs::metadata(d.join("data.mdb")).unwrap().len();
    let (live, copied) = (size(&dir.path().join("live")), size(&copy));
    // Owner-only, as the store itself.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(copy.join("data.mdb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(copied * 4 < live, "copy {copied} bytes, live {live}");
    let copied = open(&copy);
    for i in 1900..2000u32 {
        assert_eq!(get(&copied, &i.to_be_bytes()).as_deref(), Some(&big[..]));
    }
    assert_eq!(get(&copied, &5u32.to_be_bytes()), None);
    // A late write is there whole or not at all; the copy takes writes.
    let late = (10_000..10_500u32)
        .filter(|i| get(&copied, &i.to_be_bytes()).is_some())
        .count();
    assert!(
        (10_000..10_000 + late as u32)
            .all(|i| get(&copied, &i.to_be_bytes()).as_deref() == Some(&b"late"[..])),
        "the copy is not a prefix of the writes: {late} found"
    );
    copied
        .write_blocking(|txn, t| {
            txn.put(t.memories, b"after", b"restore", WriteFlags::empty())?;
            Ok(())
        })
        .unwrap();
    assert_eq!(get(&copied, b"after").as_deref(), Some(&b"restore"[..]));
    // Into a missing directory: a clear error, nothing made.
    let err = store
        .copy_compacted(&dir.path().join("nowhere"))
        .unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
}

/// What every engine must do the same way.
fn contract(store: &Store) {
    let key = |s: &str| s.as_bytes().to_vec();
    store
        .write_blocking(move |txn, t| {
            for k in ["a1", "a2", "a3", "a4", "a5", "b1"] {
                txn.put(t.memories, k, k, WriteFlags::empty())?;
            }
            txn.put(t.dedup, "a1", "other table", WriteFlags::empty())
        })
        .unwrap();
    // Inside one write: its own writes are read back, in key order, merged
    // with what was there.
    let seen = store
        .write_blocking(move |txn, t| {
            txn.put(t.memories, "a3", "new", WriteFlags::empty())?;
            txn.del(t.memories, "a2")?;
            txn.put(t.memories, "a25", "a25", WriteFlags::empty())?;
            let mut seen = Vec::new();
            visit_in(txn, t.memories, b"a", 10, |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                k.starts_with(b"a")
            })?;
            assert_eq!(get_in(txn, t.memories, b"a2")?, None);
            assert_eq!(
                get_in(txn, t.memories, b"a3")?.as_deref(),
                Some(&b"new"[..])
            );
            let last = last_at_or_before(txn, t.memories, b"a", b"a2")?;
            assert_eq!(last.map(|r| r.0), Some(key("a1")), "a2 is deleted here");
            let last = last_at_or_before(txn, t.memories, b"a", b"a29")?;
            assert_eq!(last.map(|r| r.0), Some(key("a25")));
            // A key written here is read with its new value.
            let last = last_at_or_before(txn, t.memories, b"a", b"a3")?;
            assert_eq!(last, Some((key("a3"), key("new"))));
            let n = with_prefix_in(txn, t.memories, b"a", |rows| rows.len())?;
            assert_eq!(n, 5);
            Ok(seen)
        })
        .unwrap();
    let keys: Vec<Vec<u8>> = seen.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        [
            key("a1"),
            key("a25"),
            key("a3"),
            key("a4"),
            key("a5"),
            key("b1")
        ]
    );
    assert_eq!(seen[2].1, b"new");
    // Committed: the same from a read.
    let rows = store
        .rows(|t| t.memories, b"a", |k| k.starts_with(b"a"))
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        store.get(|t| t.dedup, b"a1").unwrap().as_deref(),
        Some(&b"other table"[..])
    );
    assert_eq!(
        store
            .read(|txn, t| last_at_or_before(txn, t.memories, b"b", b"b9"))
            .unwrap(),
        Some((key("b1"), key("b1")))
    );
    assert_eq!(
        store
            .read(|txn, t| last_at_or_before(txn, t.memories, b"b", b"a9"))
            .unwrap(),
        None,
        "the last key at or before a9 is a5: not in prefix b"
    );
    // NO_OVERWRITE refuses a taken key, and the failing write leaves nothing.
    let taken = store.write_blocking(|txn, t| {
        txn.put(t.memories, "a9", "half", WriteFlags::empty())?;
        txn.put(t.memories, "a1", "again", WriteFlags::NO_OVERWRITE)
    });
    assert!(matches!(taken, Err(StoreError::Exists)), "{taken:?}");
    assert_eq!(store.get(|t| t.memories, b"a9").unwrap(), None);
    assert_eq!(
        store.get(|t| t.memories, b"a1").unwrap().as_deref(),
        Some(&b"a1"[..])
    );
    // Many rows: a visit crosses pages, deletes inside a write included.
    store
        .write_blocking(|txn, t| {
            for i in 0..700u32 {
                txn.put(
                    t.vectors,
                    &i.to_be_bytes(),
                    &[1u8; 100],
                    WriteFlags::empty(),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let (all, some) = store
        .write_blocking(|txn, t| {
            for i in (0..700u32).step_by(3) {
                txn.del(t.vectors, &i.to_be_bytes())?;
            }
            let mut all = 0;
            visit_in(txn, t.vectors, b"", usize::MAX, |_, _| {
                all += 1;
                true
            })?;
            let some = visit_in(txn, t.vectors, &100u32.to_be_bytes(), 50, |_, _| true)?;
            Err::<(), _>(StoreError::Rejected(format!("{all} {some}")))
        })
        .unwrap_err()
        .to_string()
        .split_once(' ')
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap();
    assert_eq!((all, some), (466, 50));
    assert_eq!(store.rows(|t| t.vectors, b"", |_| true).unwrap().len(), 700);
    assert_eq!(
        store.prefixes(|t| t.memories, b"", 1).unwrap(),
        [key("a"), key("b")]
    );
    assert_eq!(
        store.delete_prefix(|t| t.vectors, b"", |_| true).unwrap(),
        700
    );
    assert!(store.rows(|t| t.vectors, b"", |_| true).unwrap().is_empty());
}

#[test]
fn lmdb_keeps_the_engine_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&open(dir.path()));
}

#[test]
fn postgres_keeps_the_engine_contract() {
    let pg = Postgres::start();
    let store = Store::open(Path::new("/nonexistent"), &pg.options()).unwrap();
    contract(&store);
    assert!(store.is_shared());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_concurrent_writes_and_a_failing_one_alone() {
    let pg = Postgres::start();
    let store = Store::open(Path::new("/nonexistent"), &pg.options()).unwrap();
    let before = store.commits();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |txn, t| {
                    txn.put(t.memories, &i.to_be_bytes(), b"v", WriteFlags::empty())?;
                    if i % 50 == 7 {
                        return Err(StoreError::Rejected(format!("{i} refused")));
                    }
                    Ok(i)
                })
                .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(n) => assert_eq!(n, i as u32),
            Err(e) => assert_eq!(e.to_string(), format!("{i} refused")),
        }
    }
    let commits = store.commits() - before;
    assert!(
        commits < 300,
        "{commits} commits for 300 writes: no group commit"
    );
    let store2 = store.clone();
    let rows = tokio::task::spawn_blocking(move || store2.rows(|t| t.memories, b"", |_| true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 300 - 6);
    // Every batch that wrote is one change, in order, naming its keys.
    let changes: u64 = pg
        .psql(0, "SELECT count(*) FROM memhost_changes")
        .parse()
        .unwrap();
    let keys: u64 = pg
        .psql(
            0,
            "SELECT sum(cardinality(keys)) FROM memhost_changes WHERE seq > 1",
        )
        .parse()
        .unwrap();
    assert!(
        changes >= 2 && changes as usize <= commits + 1,
        "{changes} changes"
    );
    assert_eq!(keys, 294);
    let store2 = store.clone();
    let feed = tokio::task::spawn_blocking(move || store2.changes_after(0, 10_000))
        .await
        .unwrap()
        .unwrap();
    let seqs: Vec<u64> = feed.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=changes).collect::<Vec<_>>(), "gapless, in order");
    assert_eq!(feed[0].keys, [(TABLES.meta, META_SCHEMA.to_vec())]);
    let mut written: Vec<u32> = feed[1..]
        .iter()
        .flat_map(|c| &c.keys)
        .map(|(t, k)| {
            assert_eq!(*t, TABLES.memories);
            u32::from_be_bytes(k[..].try_into().unwrap())
        })
        .collect();
    written.sort_unstable();
    assert_eq!(
        written,
        (0..300).filter(|i| i % 50 != 7).collect::<Vec<_>>()
    );
    // The database holds sealed bytes only: here, what was put.
    assert_eq!(
        pg.psql(
            0,
            "SELECT count(*) FROM memhost_rows WHERE tbl = 4 AND v = 'v'::bytea"
        ),
        "294"
    );
}

#[test]
fn postgres_refuses_a_newer_layout_and_a_newer_schema() {
    let pg = Postgres::start();
    {
        let store = Store::open(Path::new("/nonexistent"), &pg.options()).unwrap();
        store
            .write_blocking(|txn, t| txn.put(t.memories, "kept", "yes", WriteFlags::empty()))
            .unwrap();
    }
    pg.psql(0, "UPDATE memhost_layout SET version = version + 1");
    let err = Store::open(Path::new("/nonexistent"), &pg.options())
        .err()
        .unwrap();
    assert!(err.to_string().contains("upgrade memhost"), "{err}");
    pg.psql(0, "UPDATE memhost_layout SET version = version - 1");
    let newer = (SCHEMA_VERSION + 1).to_be_bytes();
    pg.psql(0, &format!(
        "UPDATE memhost_rows SET v = '\\x{}'::bytea WHERE tbl = 0 AND k = 'schema_version'::bytea",
        hex::encode(newer)
    ));
    let err = Store::open(Path::new("/nonexistent"), &pg.options())
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert_eq!(
        pg.psql(
            0,
            "SELECT count(*) FROM memhost_rows WHERE k = 'kept'::bytea"
        ),
        "1"
    );
}

#[test]
fn postgres_over_tls_checks_the_servers_certificate() {
    let pg = Postgres::start();
    let ca = pg.enable_tls(0);
    let url = format!("{}?sslmode=require", pg.url_of(0));
    let with = |ca_file: Option<PathBuf>| {
        Store::open(
            Path::new("/nonexistent"),
            &StoreOptions {
                postgres: Some(url.clone()),
                ca_file,
                ..StoreOptions::default()
            },
        )
    };
    // Its CA unknown: refused, saying why.
    let err = with(None).err().unwrap().to_string();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    // Trusted: the store works, over TLS.
    let store = with(Some(ca)).unwrap();
    store
        .write_blocking(|txn, t| txn.put(t.memories, "over", "tls", WriteFlags::empty()))
        .unwrap();
    assert_eq!(
        store.get(|t| t.memories, b"over").unwrap().as_deref(),
        Some(&b"tls"[..])
    );
    let encrypted = pg.psql(
        0,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'memhost'",
    );
    assert_eq!(encrypted, "t");
    // A CA file without a certificate: a clear error.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = with(Some(empty.path().to_path_buf()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("ca_file") && err.contains("no certificate"),
        "{err}"
    );
}
