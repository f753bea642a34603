//! `big`: a ~1.1 MB component, for measuring how long a hot swap of a large policy takes
//! (`bench/hotswap.sh`). It embeds a 1 MiB table of pseudo-random bytes (made by `build.rs`)
//! and really uses it: every request is forwarded to the default pool with request header
//! `x-big-entry` set to the hex of the 8 table bytes picked by an FNV-1a hash of the path, so
//! no optimiser can drop any part of the table.

use sluice_sdk::prelude::*;

static TABLE: &[u8; 1 << 20] = include_bytes!(concat!(env!("OUT_DIR"), "/table.bin"));

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    Decision::forward_default().set_request_header("x-big-entry", entry(req.path()))
}

/// The 8 table bytes at the slot `path` hashes to, as 16 hex digits.
fn entry(path: &str) -> String {
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let slot = (hash as usize % (TABLE.len() / 8)) * 8;
    TABLE[slot..slot + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::entry;

    #[test]
    fn entries_are_16_hex_digits_and_depend_on_the_path() {
        assert_eq!(entry("/").len(), 16);
        assert!(entry("/").bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(entry("/a"), entry("/b"));
    }
}
