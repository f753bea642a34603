//! Host bindings generated from `wit/` (the one source of the interface). Private to
//! `policy/`: nothing outside this module names a generated type.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    with: {
        // The request resource is the one request in the store; see `host.rs`.
        "sluice:policy/types.request": super::host::RequestRep,
    },
});
