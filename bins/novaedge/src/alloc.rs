//! The process's memory allocator, shared by the binary and the examples that measure it
//! (`examples/scale_stages.rs`), so that their figures are the binary's.

/// jemalloc, not the C library's allocator: a proxy frees what a burst of connections held
/// (an HTTP/1.1 connection's ~17 KB of buffers when it parks) between objects that live on,
/// and glibc keeps those holes in its heaps for good, where jemalloc gives their pages back.
/// With 10,000 idle client connections (`bench/compare.sh`'s idle part), RSS per connection
/// was 4.9 KB with glibc and 2.7 KB with jemalloc, measured side by side.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns freed pages to the
/// kernel (not the threads serving requests) once they have been unused for a second
/// (jemalloc's default is ten): a burst's memory is given back by the time its connections
/// are idle. Each thread's cache of freed objects is trimmed after every 256 KiB its thread
/// allocates instead of every 64 KiB: a proxied request allocates a few KiB, and takes 2%
/// fewer instructions so (callgrind). At 1 MiB it took 4% fewer, but 10,000 idle connections
/// then held 20-25% more RSS (the caches keep more of what their tasks freed); at 256 KiB,
/// 271-305 bytes each against 257-279.
#[allow(
    unsafe_code,
    reason = "jemalloc reads its settings from this exported symbol; the only unsafe item here"
)]
// SAFETY: jemalloc declares the symbol `const char *malloc_conf` (prefixed `_rjem_` by
// tikv-jemalloc-sys): a thin pointer to a NUL-terminated string, which `&[u8; 71]` is, to
// static bytes ending in `\0`. Nothing else in the program has this name.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 71] =
    b"background_thread:true,dirty_decay_ms:1000,tcache_gc_incr_bytes:262144\0";
