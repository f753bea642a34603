//! `fs-importer`: a policy that uses `std::fs`, so its component imports `wasi:filesystem`
//! (`types` and `preopens`), as interpreters' components do. The host links it with no
//! preopened directory: the component loads, and every path it tries to open does not exist.
//!
//! `/read...` reads the file named by setting `file` (default `/etc/hostname`) and answers a
//! local 200 with its contents (500 with the error); everything else is forwarded to the default
//! pool without touching the filesystem.

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    if !req.path().starts_with("/read") {
        return Decision::forward_default();
    }
    let file = config::get_or("file", "/etc/hostname");
    match std::fs::read(&file) {
        Ok(contents) => Decision::respond(200, contents),
        Err(e) => Decision::respond(500, format!("{file}: {e}\n")),
    }
}
