//! Process-wide allocator settings for batch extraction and attribution.
#![allow(unsafe_code)]

/// Keeps freed large buffers mapped for the next batch.
///
/// Every batch allocates its hooked activations (6 MB each for MiniLM at 32 × 128) and frees
/// them once they are written. By default glibc serves such sizes with a fresh `mmap`, or
/// from the heap but hands a freed top of more than a few MB back to the OS, so the next batch
/// page-faults and zeroes the same memory again: 2.4–3.8 ms per 6 MB copy, 4% of a MiniLM
/// forward, against 1.1–1.5 ms with the memory kept.
///
/// Here glibc serves every block from the heap (no `mmap` at any size: its threshold stops at
/// 32 MiB, and EfficientNet's attribution backward allocates 77 MB buffers at batch 16) and
/// keeps up to 1 GiB of freed heap mapped. With `mmap` above 32 MiB and 256 MiB kept, IG over 8
/// images took 21.0 s, 9.4 s of it in the kernel (5.7 M page faults and the TLB shootdowns of
/// each `munmap`); without, 13.9–15.8 s, 0.4–0.5 s in the kernel, peak RSS 849 → 781 MB
/// (2026-12-06, two Sapphire Rapids cores; 512 MiB kept: 16.7 s). Peak RSS does not grow: the
/// kept memory is what the next batch reuses.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it is called at the start of `main`,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
