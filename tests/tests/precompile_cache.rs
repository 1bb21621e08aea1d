//! Compiled components are cached in a host-owned directory keyed by the
//! wasm's sha256 and the engine: a second start loads instead of compiling,
//! a changed wasm misses, and a corrupt cache entry is replaced.

use crate::common::*;
use memhost::plugins::PluginSettings;
use memhost::runtime::CacheOutcome;

fn load(cache: &std::path::Path, dir: std::path::PathBuf) -> CacheOutcome {
    let reg = registry(PluginSettings::default(), Some(cache));
    reg.apply(vec![dir]).unwrap();
    let set = reg.snapshot();
    let entry = set.entries().next().unwrap();
    entry.info.cache
}

#[test]
fn a_second_start_reuses_the_precompiled_component() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("components");
    assert_eq!(
        load(&cache_dir, staged("redact-keywords")),
        CacheOutcome::Miss
    );
    let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().to_string_lossy().into_owned();
    assert!(name.ends_with(".cwasm"), "{name}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "cache dir must be private");
    }

    // A new runtime (a second start) hits the cache.
    assert_eq!(
        load(&cache_dir, staged("redact-keywords")),
        CacheOutcome::Hit
    );
    // Another wasm is a miss, not a false hit.
    assert_eq!(
        load(&cache_dir, staged("policy-standard")),
        CacheOutcome::Miss
    );

    // A corrupted entry is not trusted: it is recompiled and rewritten.
    std::fs::write(files[0].path(), b"garbage").unwrap();
    assert_eq!(
        load(&cache_dir, staged("redact-keywords")),
        CacheOutcome::Miss
    );
    assert_eq!(
        load(&cache_dir, staged("redact-keywords")),
        CacheOutcome::Hit
    );
}
