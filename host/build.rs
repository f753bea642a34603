//! Builds the default policy (`examples/default-policy`) as a wasm32-wasip2 component and
//! copies it to `$OUT_DIR/default_policy.wasm`, which the binary embeds with `include_bytes!`.

include!("../tests/build_guests.rs");

fn main() {
    let built = build_guests(&["examples/default-policy"]);
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join("default_policy.wasm");
    if let Err(e) = std::fs::copy(&built[0], &dest) {
        panic!("copying {} to {}: {e}", built[0].display(), dest.display());
    }
}
