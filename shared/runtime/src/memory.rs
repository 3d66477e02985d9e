//! How the process asks glibc's allocator to hold memory.

/// Caps glibc's malloc arenas at two, unless `MALLOC_ARENA_MAX` already says how many.
///
/// glibc gives each thread that meets a locked arena a new one, up to eight per core, and keeps what each arena
/// once held. Tokio's workers and blocking threads, and SQLite's writer, each end up with their own: under the
/// soak's load the live heap stayed at 12–16 MB (heaptrack) while anonymous RSS crept up with every arena's high
/// water. Two arenas serve two cores. Call it first thing: glibc keeps the arenas threads made before, though it
/// makes no more once the cap is set. Elsewhere (musl, other systems) it does nothing.
pub fn bound_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; M_ARENA_MAX takes any positive count.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
