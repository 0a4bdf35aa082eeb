//! The `backend_json` target; its body is `portico::fuzzing`'s, shared with the corpus replay test.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portico::fuzzing::Targets;

static TARGETS: LazyLock<Targets> =
    LazyLock::new(|| Targets::new(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jwt")));

fuzz_target!(|data: &[u8]| TARGETS.run("backend_json", data));
