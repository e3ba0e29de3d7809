//! Transparent huge pages for the large arrays a build reads at random: the vectors, the
//! neighbour lists and the codes.
//!
//! A build touches these arrays at random, one vector or list at a time. On 4 KiB pages,
//! 80 MB of vectors span 20,000 pages, far more than the CPU's TLB holds, so most reads
//! first walk the page tables. On 2 MiB pages they span 40. Linux gives anonymous memory
//! huge pages on its own only when `transparent_hugepage/enabled` is `always`; Debian's
//! default is `madvise`, where a region must ask for them.

/// Asks the kernel to back `data` (its whole 2 MiB-aligned pieces) by transparent huge
/// pages: `MADV_HUGEPAGE` for the pages faulted from now on, then `MADV_COLLAPSE` (Linux
/// 6.1 and later) to move those already there. Only advice: a kernel that has no huge
/// pages, or refuses, leaves the memory as it was, and the data never changes. A no-op off
/// Linux and for arrays under 2 MiB.
pub fn advise<T>(data: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (data.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (data.as_ptr() as usize + std::mem::size_of_val(data)) / HUGE * HUGE;
        if end <= start {
            return;
        }
        /// `MADV_COLLAPSE` (linux/mman.h); not in every libc crate release.
        const MADV_COLLAPSE: libc::c_int = 25;
        // SAFETY: [start, end) lies within `data`'s allocation, which this process owns and
        // which stays mapped while `data` is borrowed; both advices change how the range is
        // backed, never its contents, and fail harmlessly (EINVAL, EAGAIN) where refused.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            libc::madvise(start as *mut libc::c_void, end - start, MADV_COLLAPSE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Advice never changes the data, at any size and alignment.
    #[test]
    fn advice_keeps_the_data() {
        for n in [0usize, 1, 1000, 3 << 20, (5 << 20) + 17] {
            let v: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
            let before = v.clone();
            advise(&v);
            advise(&v[n.min(3)..]);
            assert_eq!(v, before);
        }
    }
}
