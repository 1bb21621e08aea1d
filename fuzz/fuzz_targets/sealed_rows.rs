//! Rows as read back from a database file someone else may have written:
//! a sealed row of any bytes opens or is refused, a job row or a reindex
//! pass row decodes or is refused — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memhost::crypto::DataKey;
use memhost::index::vector::Job;
use memhost::service::indexing::RequeuePass;

fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::LazyLock<DataKey> = std::sync::LazyLock::new(DataKey::generate);
    let _ = KEY.open("memories", b"row", data);
    let _ = DataKey::sealed_len(data);
    let _ = Job::decode(data);
    if let Some(pass) = RequeuePass::decode(data) {
        assert_eq!(RequeuePass::decode(&pass.encode()), Some(pass));
    }
});
