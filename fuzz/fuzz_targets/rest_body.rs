//! A request body as every REST route reads it: any bytes, as each body
//! type. Never a panic; an answer is a value or a problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memhost::api::rest::read_json_body;
use memhost::service::approvals::NewVote;
use memhost::service::recall::RecallQuery;
use memhost::service::{MemoryPatch, NewKey, NewMemory};

fuzz_target!(|data: &[u8]| {
    let ct = Some("application/json".to_string());
    let _ = read_json_body::<NewMemory>(ct.clone(), data, false);
    let _ = read_json_body::<MemoryPatch>(ct.clone(), data, false);
    let _ = read_json_body::<RecallQuery>(ct.clone(), data, true);
    let _ = read_json_body::<NewKey>(ct.clone(), data, false);
    let _ = read_json_body::<NewVote>(ct, data, false);
});
