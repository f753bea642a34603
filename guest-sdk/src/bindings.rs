//! The generated bindings for the `sluice:policy` world, and the glue the `#[policy]`
//! attribute expands to.
//!
//! This is the only module with `unsafe` code: wit-bindgen's output (the canonical ABI). Everything here is `#[doc(hidden)]`; it is `pub` only because code
//! expanded in the policy's crate has to name it. It is not part of the SDK's API.

// wit-bindgen's generated code and `export!` macro are `unsafe` by nature (raw pointers into
// linear memory, `export_name`, `link_section`); the workspace denies `unsafe_code`, so it is
// allowed here and nowhere else in the SDK.
#![allow(unsafe_code, missing_docs)]

use std::sync::Once;

// The `responder` world (decide + on-response) holds every interface; the `policy` world
// (decide only) reuses them, so a policy's types are the same whichever world it exports.
wit_bindgen::generate!({
    path: "../wit",
    world: "responder",
    // The `#[policy]` attribute expands `export!` in the policy's crate, so the macro has to
    // be exported and must find the bindings and wit-bindgen's runtime through this crate:
    // policies depend on `sluice-sdk` only.
    pub_export_macro: true,
    export_macro_name: "export_responder",
    default_bindings_module: "::sluice_sdk::__bindings",
    runtime_path: "::sluice_sdk::__bindings::wit_bindgen::rt",
});

/// The `policy` world: what a policy without `on-response` exports.
pub mod plain {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "::sluice_sdk::__bindings::plain",
        runtime_path: "::sluice_sdk::__bindings::wit_bindgen::rt",
        with: {
            "sluice:policy/types@0.3.0": crate::__bindings::sluice::policy::types,
            "sluice:policy/request@0.3.0": crate::__bindings::sluice::policy::request,
            "sluice:policy/balancer@0.3.0": crate::__bindings::sluice::policy::balancer,
            "sluice:policy/health@0.3.0": crate::__bindings::sluice::policy::health,
            "sluice:policy/cache@0.3.0": crate::__bindings::sluice::policy::cache,
            "sluice:policy/log@0.3.0": crate::__bindings::sluice::policy::log,
            "sluice:policy/config@0.3.0": crate::__bindings::sluice::policy::config,
        },
    });
}

pub use wit_bindgen;

pub(crate) use sluice::policy::{balancer, cache, config, health, log, request, response, types};

/// Runs the policy function for one `decide` call. Called by the code `#[policy]` expands to.
pub fn run(decide: fn(&crate::Request) -> crate::Decision) -> Decision {
    install_panic_hook();
    decide(&crate::Request::current()).into_raw()
}

/// Runs the response function for one `on-response` call.
pub fn run_response(
    on_response: fn(&crate::Request, &crate::Response) -> crate::ResponseDecision,
) -> ResponseDecision {
    install_panic_hook();
    on_response(&crate::Request::current(), &crate::Response::current()).into_raw()
}

/// Sends panic messages to the host's log at error level. A panic then aborts (traps), and
/// the host applies the policy's `fail` setting; without the hook the operator would see a
/// trap and no reason.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-string panic payload)");
            let line = match info.location() {
                Some(at) => format!("policy panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("policy panicked: {message}"),
            };
            log::log(log::Level::Error, &line);
        }));
    });
}
