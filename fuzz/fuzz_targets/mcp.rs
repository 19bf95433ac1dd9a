//! `mcp`: see crates/airlock-fuzz (what the input becomes, which properties are checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = airlock_fuzz::mcp(data) {
        panic!("{finding}");
    }
});
