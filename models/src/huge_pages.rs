//! Transparent huge pages for the buffers that hold a checkpoint's weights.
//!
//! Where Linux hands out huge pages only on request (`transparent_hugepage/enabled` =
//! `madvise`, the common default), the weights sat in 4 KB pages: loading a 5.2 GB
//! checkpoint took 1.3 million page faults, and an AMX A-tile load, 16 weight rows a few KB
//! apart, touched 16 pages. With huge pages (measured through glibc's `malloc.hugetlb`
//! tunable, Gemma-2-2B shape, 2026-12-06): 24 texts 11.1–11.5 s against 12.1–14.1 s, most of
//! it loading; the timed forward within noise (median −2%). With this call: loading plus the
//! first batch of 8 texts 6.8–7.0 s against 8.0–8.1 s, 4.5 of the 5.4 GB resident in huge
//! pages, peak RSS unchanged.
//!
//! `unsafe_code` is allowed here for the one `madvise` call.
#![allow(unsafe_code)]

/// Asks Linux to back the 2 MB-aligned interior of `v`'s allocation (its capacity) with huge
/// pages, before it is written. A refusal (huge pages off, another OS) changes nothing.
pub(crate) fn advise<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        let start = v.as_ptr() as usize;
        let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if end > first {
            // SAFETY: `madvise` only changes how the kernel backs this range, which lies
            // inside `v`'s allocation; it reads and writes none of our memory, and its result
            // (success or not) needs no handling.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}
