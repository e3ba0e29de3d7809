//! The instruction set the code kernels ([`plane_sum`](crate::quant::plane_sum) and
//! FastScan's block sums) run with, detected once per process.
//!
//! Three levels: AVX-512 (F and BW), AVX2 (with FMA), and portable Rust, which LLVM
//! vectorizes for the target's baseline (SSE2 on x86_64, NEON on aarch64). The exact distance
//! kernels are simsimd's, which dispatches on its own.
//!
//! The environment variable `OMEN_SIMD` (`avx512`, `avx2` or `portable`) lowers the level,
//! never raises it past what the CPU has: a server started with `OMEN_SIMD=avx2` runs as it
//! would on a CPU without AVX-512, so that the fallbacks can be measured on this machine.

use std::sync::OnceLock;

/// A SIMD level, ordered: a CPU that has one level has every level below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Portable,
    Avx2,
    Avx512,
}

impl Level {
    /// The level named by `OMEN_SIMD`'s value, `None` for anything else.
    pub fn parse(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" | "none" => Some(Level::Portable),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// The name `OMEN_SIMD` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Every level this CPU has, lowest first (for tests and benchmarks).
    pub fn supported() -> impl Iterator<Item = Level> {
        [Level::Portable, Level::Avx2, Level::Avx512].into_iter().filter(|&l| l <= detected())
    }
}

/// The highest level this CPU has.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx2") && has!("fma") {
                return Level::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Level::Avx2;
            }
        }
        Level::Portable
    })
}

/// The level the kernels run at: [`detected`], lowered by `OMEN_SIMD` if it is set.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let asked = std::env::var("OMEN_SIMD").ok().and_then(|v| Level::parse(&v));
        asked.map_or(detected(), |l| l.min(detected()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("portable"), Some(Level::Portable));
        assert_eq!(Level::parse("sse9"), None);
        for l in [Level::Portable, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert!(Level::Portable < Level::Avx2 && Level::Avx2 < Level::Avx512);
        let all: Vec<Level> = Level::supported().collect();
        assert_eq!(all.first(), Some(&Level::Portable));
        assert_eq!(all.last(), Some(&detected()));
        assert!(level() <= detected());
    }
}
