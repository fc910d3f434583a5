//! How the process uses the CPU: allocator settings and rayon, shared by every stage that
//! runs candle or rustface.

/// Prepare the process for fast CPU inference; call it first thing in `main`, before any
/// thread starts.
///
/// - candle's kernels run on one thread unless `RAYON_NUM_THREADS` is set: the app runs detection
///   and inference on separate threads, one core each, and candle's matmuls spreading over both
///   cores only makes them fight. Setting the variable also stops candle from re-reading
///   /proc/cpuinfo on every matmul.
/// - glibc's malloc keeps freed memory instead of handing each activation buffer back to the OS:
///   otherwise every forward pass page-faults its megabytes of temporaries in again, which
///   doubled the time of a batch of eight faces. All threads share one arena so that this holds
///   on every thread.
pub fn init_cpu_runtime() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called at program start, before any other thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        // Never trim: a training step of batch 64 peaks near 1 GB and frees it all at the end;
        // handing that back made the next step page-fault it in again (a tenth of the time).
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // Training's unfolded patches exceed the largest mmap threshold glibc accepts (32 MB);
        // without this they would still be mapped and page-faulted in on every step.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // One arena for every thread: in a thread's own arena (heaps of at most 64 MB) the
        // settings above do not hold, and big blocks are mapped and unmapped on every step;
        // that made a training step split over two threads slower than one thread.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

thread_local! {
    static OWN_POOL: Option<rayon::ThreadPool> =
        rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok();
}

/// Make the calling thread a rayon pool of its own, one thread wide, for the rest of its life.
///
/// rustface runs parts of its cascade with rayon (and so do some candle ops). Called from a
/// plain thread, each call hands the work to rayon's global pool and waits, while the pool's
/// idle workers spin on the other core: detection took twice as long and a third of the CPU
/// went to the scheduler. Inside a one-thread pool of its own, the work runs inline.
pub fn use_own_rayon_pool() {
    OWN_POOL.with(|_| {});
}
