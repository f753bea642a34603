//! The generated bindings for the `sluice:policy` world, and the glue the `#[policy]`
//! attribute expands to.
//!
//! This is the only module with `unsafe` code: wit-bindgen's output (the canonical ABI), and
//! `lend`, which views the request handle the host lends to `decide` as a second,
//! never-dropped value. Everything here is `#[doc(hidden)]`; it is `pub` only because code
//! expanded in the policy's crate has to name it. It is not part of the SDK's API.

// wit-bindgen's generated code and `export!` macro are `unsafe` by nature (raw pointers into
// linear memory, `export_name`, `link_section`); the workspace denies `unsafe_code`, so it is
// allowed here and nowhere else in the SDK.
#![allow(unsafe_code, missing_docs)]

use std::mem::ManuallyDrop;
use std::sync::Once;

wit_bindgen::generate!({
    path: "../wit",
    world: "policy",
    // The `#[policy]` attribute expands `export!` in the policy's crate, so the macro has to
    // be exported and must find the bindings and wit-bindgen's runtime through this crate:
    // policies depend on `sluice-sdk` only.
    pub_export_macro: true,
    default_bindings_module: "::sluice_sdk::__bindings",
    runtime_path: "::sluice_sdk::__bindings::wit_bindgen::rt",
});

pub use wit_bindgen;

pub(crate) use sluice::policy::{balancer, cache, config, health, log, types};

/// Views the request the host lends to `decide` as an owned value that is never dropped.
///
/// The SDK's `Request` wraps this so that it needs no lifetime parameter (policies write
/// `&Request`, and helpers like `fn pool(req: &Request) -> &str` elide cleanly).
pub(crate) fn lend(req: &types::Request) -> ManuallyDrop<types::Request> {
    // SAFETY: the new value names the same borrowed handle as `req`. `ManuallyDrop` keeps it
    // from ever running `[resource-drop]request` on a handle this component does not own,
    // and `run` below keeps it on its stack for the duration of the borrow only: the
    // `Request` built from it is lent to the policy function as `&Request` for one call, and
    // `Request` is neither `Clone` nor constructible outside this crate.
    ManuallyDrop::new(unsafe { types::Request::from_handle(req.handle()) })
}

/// Runs the policy function for one `decide` call. Called by the code `#[policy]` expands to.
pub fn run(req: &Request, decide: fn(&crate::Request) -> crate::Decision) -> Decision {
    install_panic_hook();
    let req = crate::Request::lent(lend(req));
    decide(&req).into_raw()
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
