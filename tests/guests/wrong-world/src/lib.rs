//! `wrong-world`: a component exporting `decide: func(x: u32) -> u32` (its own WIT, in
//! `wit/`): the right export name with the wrong type. The host must reject it when loading.

// wit-bindgen's `export!` expands to `export_name`/`link_section` attributes, which are unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "wrong-world" });

struct WrongWorld;

impl Guest for WrongWorld {
    fn decide(x: u32) -> u32 {
        x.wrapping_add(1)
    }
}

export!(WrongWorld);
