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
