//! Rows as read back from a database file someone else may have written:
//! a sealed row of any bytes opens or is refused, a job row, a reindex
//! pass row or a segment's opened bytes decode or are refused — never a
//! panic. (A segment's bytes are sealed: only a holder of the namespace
//! key can make them, so its graph is not checked beyond decoding.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use memhost::crypto::DataKey;
use memhost::index::segment::Segment;
use memhost::index::vector::Job;
use memhost::service::indexing::RequeuePass;

fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::LazyLock<DataKey> = std::sync::LazyLock::new(DataKey::generate);
    let _ = KEY.open("memories", b"row", data);
    let _ = DataKey::sealed_len(data);
    let _ = Job::decode(data);
    if let Ok(segment) = Segment::decode(0, data) {
        let _ = segment.points().count();
    }
    if let Some(pass) = RequeuePass::decode(data) {
        assert_eq!(RequeuePass::decode(&pass.encode()), Some(pass));
    }
});
