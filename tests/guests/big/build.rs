//! Writes `$OUT_DIR/table.bin`: 1 MiB of pseudo-random bytes (xorshift64, fixed seed, so the
//! component's bytes are the same on every build). Random rather than zero so the data segment
//! is really 1 MiB in the component (zeros would become uninitialised memory).

fn main() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut table = Vec::with_capacity(1 << 20);
    while table.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        table.extend_from_slice(&x.to_le_bytes());
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("table.bin"), table).expect("writing table.bin");
    println!("cargo:rerun-if-changed=build.rs");
}
