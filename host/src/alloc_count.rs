//! A counting wrapper around the global allocator, for bench builds only
//! (`cargo build --release --features count-allocs`): `GET /stats` then reports how many
//! allocations (and bytes) the process has made, so a load run can divide the difference by
//! its requests. Two shared atomic counters cost every allocation a contended cache line, so
//! this build is for counting, never for timing.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts every allocation (a `realloc` counts as one) and delegates to `A`.
pub struct Counting<A>(pub A);

fn note(size: usize) {
    COUNT.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
}

// The workspace denies unsafe code; a GlobalAlloc cannot be written without it.
// SAFETY: every call is forwarded unchanged to the wrapped allocator.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// (allocations, bytes) so far, when the binary counts them.
pub fn snapshot() -> Option<(u64, u64)> {
    cfg!(feature = "count-allocs").then(|| (COUNT.load(Relaxed), BYTES.load(Relaxed)))
}
