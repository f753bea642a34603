//! Host bindings generated from the WIT packages the host implements. Private to `policy/`:
//! nothing outside this module names a generated type.
//!
//! - [`v03`]: `sluice:policy@0.3.x` from `wit/` (the one source of the current interface),
//!   world `responder` (the `policy` world plus `on-response`). Its exports are looked up by
//!   name at load (`revision.rs`), so one set of bindings serves both worlds.
//! - [`v02`]: `sluice:policy@0.2.1` from `host/wit/0.2.1/`, frozen: components built with
//!   sluice-sdk 0.2.x keep loading unchanged.

pub mod v03 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "responder",
        // An import called outside a call (the request is gone) traps instead of panicking.
        imports: { default: trappable },
    });
}

pub mod v02 {
    wasmtime::component::bindgen!({
        path: "wit/0.2.1",
        world: "policy",
        imports: { default: trappable },
        with: {
            // The request resource is the one request in the store; see `host.rs`.
            "sluice:policy/types.request": crate::policy::store::RequestRep,
        },
    });
}
