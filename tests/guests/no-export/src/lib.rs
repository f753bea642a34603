//! `no-export`: a component that imports sluice's `log` interface but does not export
//! `decide` (only an unrelated `ping`, which logs, so the import is really there). The host
//! must reject it when loading.

// wit-bindgen's `export!` expands to `export_name`/`link_section` attributes, which are unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package test:no-export;

        world no-export {
            import sluice:policy/log@0.3.0;
            export ping: func();
        }
    ",
    world: "test:no-export/no-export",
    generate_all,
});

struct NoExport;

impl Guest for NoExport {
    fn ping() {
        sluice::policy::log::log(sluice::policy::log::Level::Info, "ping");
    }
}

export!(NoExport);
