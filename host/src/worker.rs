//! Which worker thread the code runs on (`[runtime] mode = "per-core"`).
//!
//! Slot 0 is every thread that is not a worker: the shared runtime, the main runtime of
//! per-core mode (admin, health checks, reloads) and tests. Worker `i` (from 0) is slot
//! `i + 1`. State that must stay with one thread's event loop (idle upstream connections,
//! whose sockets are registered with that loop's reactor) is kept per slot.

use std::cell::Cell;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// This thread's slot.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// Marks this thread as worker `index` (from 0), for the rest of its life.
pub(crate) fn enter(index: usize) {
    SLOT.with(|s| s.set(index + 1));
}
