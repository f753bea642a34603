//! Builds every example policy and test guest as a wasm32-wasip2 component, in one nested
//! cargo invocation, and writes `$OUT_DIR/guests.rs`: one `pub const NAME: &str` per
//! component holding the absolute path of its `.wasm` (see `sluice_tests::guests`).

include!("build_guests.rs");

/// Guest crate directories; each is named after its package, whose name gives the constant's.
const GUESTS: &[&str] = &[
    "examples/default-policy",
    "examples/path-routing",
    "examples/canary",
    "examples/sticky-ab",
    "examples/auth-gate",
    "examples/maintenance",
    "examples/latency-aware",
    "examples/per-path-algorithm",
    "tests/guests/probe",
    "tests/guests/swap-a",
    "tests/guests/swap-b",
    "tests/guests/fs-importer",
    "tests/guests/wrong-world",
    "tests/guests/old-world",
    "tests/guests/no-export",
    "tests/guests/big",
    "tests/guests/cache-policy",
    "tests/guests/cache-import",
    "tests/guests/prev-minor",
    "tests/guests/responder",
];

fn main() {
    let built = build_guests(GUESTS);
    let mut code = String::new();
    for (dir, wasm) in GUESTS.iter().zip(&built) {
        let package = package_of(dir);
        let wasm = wasm.to_str().expect("the target directory path is UTF-8");
        code.push_str(&format!(
            "/// The `{package}` component, built from `{dir}`.\npub const {}: &str = {wasm:?};\n",
            package.replace('-', "_").to_uppercase(),
        ));
    }
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out_dir.join("guests.rs"), code).expect("writing guests.rs");
}
