//! Decodes the input into a file setup and an operation sequence and runs the model
//! checker of `genpager::testing::model` over it (the same checker as
//! `tests/model.rs`): any invariant it finds broken is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (setup, ops) = genpager::testing::model::decode(data);
    if let Err(error) = genpager::testing::model::run(&setup, &ops) {
        panic!("model check failed\nsetup: {setup:?}\nops: {ops:#?}\n{error}");
    }
});
