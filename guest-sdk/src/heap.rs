//! How much memory the app uses, as the allocator sees it: the guest side of the
//! `tasuki:server/memory` export, and of redis's `used_memory` in the kv releases.
//!
//! With the `heap-stats` feature (on by default) the SDK installs a global allocator that wraps
//! the standard one (dlmalloc on `wasm32-wasip2`) and keeps one counter: bytes handed out and not
//! yet freed, by requested size. An app that installs its own allocator turns the feature off;
//! [`in_use`] then reads 0 and the host compacts it only on request (`tasuki compact`).
//!
//! The counter sees only what Rust allocates and frees. wasi-libc, under `std::fs` and the rest
//! of std's WASI, calls dlmalloc directly, and what it allocates it frees with `free()`: the
//! buffers it keeps, and the lists and strings a WASI call returns to it (each file read is one,
//! of the bytes read). The host writes those into memory it gets from the component's *import*
//! realloc, which std defines as its `cabi_realloc`, through the global allocator: counted in,
//! never counted out, so every byte a server ever read from a file stayed in the count (92 MB of
//! a 9 MiB linear memory after an FTP server streamed 8 MiB and ten aborted downloads). The SDK
//! therefore exports `cabi_import_realloc`, which the component linker (`wit-component`) uses
//! for every import instead, and which allocates from dlmalloc uncounted, as wasi-libc's own
//! `cabi_realloc` would. `cabi_realloc` stays std's and counted: the host uses it for an export's
//! arguments, which the SDK's bindings free through the global allocator.
//!
//! This holds because no import the SDK calls returns a list or a string (`tasuki:server`'s
//! return numbers only): every list an import returns is wasi-libc's. An app that calls such an
//! import from Rust (the `wasi` crate, bindings of its own) frees memory that was never counted;
//! the counter then stops at 0 rather than wrapping.

#![allow(
    unsafe_code,
    reason = "a global allocator is an `unsafe` trait and the import realloc an `extern` export; \
              each forwards to `System` unchanged"
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
        uncount(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_add(new_size as u64, Ordering::Relaxed);
            uncount(layout.size());
        }
        p
    }
}

/// Takes `size` freed bytes off the count, stopping at 0 (see the module docs for when Rust
/// frees bytes it never counted).
fn uncount(size: usize) {
    let size = size as u64;
    // The closure always returns `Some`: the update cannot fail.
    let _ =
        IN_USE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(size)));
}

/// The component's realloc for what its imports return (`wit-component` uses an export of this
/// name for every import's lowering, and `cabi_realloc` for the exports'): dlmalloc through
/// `System`, uncounted, because wasi-libc frees it with `free()` (see the module docs). Same
/// contract as `cabi_realloc`: `old_len == 0` allocates, otherwise resizes; never null.
#[cfg(all(target_arch = "wasm32", feature = "heap-stats"))]
#[unsafe(export_name = "cabi_import_realloc")]
unsafe extern "C" fn cabi_import_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        // A dangling, aligned pointer, as std's `cabi_realloc` gives for an empty list.
        return core::ptr::without_provenance_mut(align);
    }
    // SAFETY: the canonical ABI passes a power-of-two `align`, and `old_ptr`/`old_len` name a
    // block this function returned (with the same `align`) when `old_len` is not 0.
    let (layout, p) = unsafe {
        let layout = Layout::from_size_align_unchecked(new_len, align);
        if old_len == 0 {
            (layout, System.alloc(layout))
        } else {
            let old = Layout::from_size_align_unchecked(old_len, align);
            (layout, System.realloc(old_ptr, old, new_len))
        }
    };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p
}

#[cfg(all(target_arch = "wasm32", feature = "heap-stats"))]
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the app's allocator has handed out and not taken back (requested sizes: without the
/// allocator's headers and rounding, which add about 8 bytes per allocation), for what Rust
/// allocates: wasi-libc's own buffers, and the lists WASI calls return to it, are left out (see
/// the module docs). 0 without the `heap-stats` feature, and outside a guest.
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
