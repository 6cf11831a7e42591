//! How much memory the app uses, as the allocator sees it: the guest side of the
//! `tasuki:server/memory` export, and of redis's `used_memory` in the kv releases.
//!
//! With the `heap-stats` feature (on by default) the SDK installs a global allocator that wraps
//! the standard one (dlmalloc on `wasm32-wasip2`) and keeps one counter: bytes handed out and not
//! yet freed, by requested size. An app that installs its own allocator turns the feature off;
//! [`in_use`] then reads 0 and the host compacts it only on request (`tasuki compact`).

#![allow(
    unsafe_code,
    reason = "a global allocator is an `unsafe` trait; each method forwards to `System` unchanged"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes handed out and not yet freed. An instance runs one call at a time on one thread, so
/// relaxed ordering is exact.
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// The standard allocator, counting.
#[derive(Debug)]
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counter is bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            IN_USE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            IN_USE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_add(new_size as u64, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
}

#[cfg(all(target_arch = "wasm32", feature = "heap-stats"))]
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the app's allocator has handed out and not taken back (requested sizes: without the
/// allocator's headers and rounding, which add about 8 bytes per allocation). 0 without the
/// `heap-stats` feature, and outside a guest.
pub fn in_use() -> u64 {
    if cfg!(all(target_arch = "wasm32", feature = "heap-stats")) {
        IN_USE.load(Ordering::Relaxed)
    } else {
        0
    }
}

/// The instance's linear memory, in bytes: what it has grown to. It never shrinks; an
/// instance's memory comes back only when the host replaces it (an upgrade, `tasuki compact`).
/// 0 outside a guest.
pub fn linear_memory() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size::<0>() as u64 * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}
