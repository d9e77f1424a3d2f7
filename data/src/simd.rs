//! Which SIMD instruction set glassbox's own kernels run on.
//!
//! Every kernel dispatches through [`arch`], which picks the best level the CPU has, capped by
//! the `GLASSBOX_SIMD` environment variable: `scalar`, `avx2` (x86-64-v3: AVX2 + FMA) or
//! `avx512` (x86-64-v4). Forcing a lower level is how the test suite exercises the AVX2 and
//! scalar paths on an AVX-512 machine (`just test` runs the numeric tests under each level the
//! CPU has); asking for a level the CPU lacks gives the best it has, and a value that names no
//! level is reported on stderr and ignored. The matrix products follow the cap too
//! (`glassbox_models::kernels::gemm` runs the `gemm` crate's kernel set for the level);
//! candle's own matmuls (the autograd paths) do not.

use std::sync::OnceLock;

/// The instruction-set levels glassbox distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Plain Rust, no explicit vectors.
    Scalar,
    /// x86-64-v3: AVX2 and FMA, 8 f32 lanes.
    Avx2,
    /// x86-64-v4: AVX-512, 16 f32 lanes.
    Avx512,
}

impl SimdLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// Parses `scalar`, `avx2` or `avx512` (as `GLASSBOX_SIMD` spells them).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(Self::Scalar),
            "avx2" | "v3" => Some(Self::Avx2),
            "avx512" | "avx-512" | "v4" => Some(Self::Avx512),
            _ => None,
        }
    }
}

/// The dispatcher every glassbox kernel uses: the CPU's best level, capped by `GLASSBOX_SIMD`.
pub fn arch() -> pulp::Arch {
    *ARCH.get_or_init(|| {
        let value = std::env::var("GLASSBOX_SIMD").ok();
        let (cap, warning) = cap_of(value.as_deref());
        if let Some(warning) = warning {
            eprintln!("warning: {warning}");
        }
        capped(cap)
    })
}

/// The cap a `GLASSBOX_SIMD` value asks for, and what to tell the user when it names no level
/// (a typo would otherwise run the CPU's best level without a word).
fn cap_of(value: Option<&str>) -> (Option<SimdLevel>, Option<String>) {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return (None, None);
    };
    match SimdLevel::parse(value) {
        Some(level) => (Some(level), None),
        None => (
            None,
            Some(format!(
                "GLASSBOX_SIMD={value:?} names no level (scalar, avx2 or avx512); \
                 running at the CPU's best"
            )),
        ),
    }
}

/// The level [`arch`] runs at.
pub fn level() -> SimdLevel {
    level_of(arch())
}

/// The levels this CPU can run, lowest first (what the test suite loops over).
pub fn available_levels() -> Vec<SimdLevel> {
    let best = level_of(pulp::Arch::new());
    [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
        .into_iter()
        .filter(|l| *l <= best)
        .collect()
}

static ARCH: OnceLock<pulp::Arch> = OnceLock::new();

fn capped(cap: Option<SimdLevel>) -> pulp::Arch {
    let best = pulp::Arch::new();
    match cap {
        None => best,
        Some(cap) if cap >= level_of(best) => best,
        Some(SimdLevel::Scalar) => pulp::Arch::Scalar,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Some(_) => pulp::x86::V3::try_new().map_or(pulp::Arch::Scalar, pulp::Arch::V3),
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        Some(_) => best,
    }
}

fn level_of(arch: pulp::Arch) -> SimdLevel {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        match arch {
            pulp::Arch::V4(_) => SimdLevel::Avx512,
            pulp::Arch::V3(_) => SimdLevel::Avx2,
            _ => SimdLevel::Scalar,
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        let _ = arch;
        SimdLevel::Scalar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_cap_never_exceeds_the_cpu() {
        for level in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512] {
            assert_eq!(SimdLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(SimdLevel::parse("sse"), None);
        let best = *available_levels().last().unwrap();
        assert_eq!(level_of(capped(None)), best);
        assert_eq!(level_of(capped(Some(SimdLevel::Scalar))), SimdLevel::Scalar);
        assert_eq!(level_of(capped(Some(SimdLevel::Avx512))), best);
        assert!(level_of(capped(Some(SimdLevel::Avx2))) <= SimdLevel::Avx2);
    }

    /// A known level caps without a word; an unknown value is named back with the levels
    /// that exist; unset or blank asks for nothing.
    #[test]
    fn an_unknown_cap_is_reported_not_silently_ignored() {
        assert_eq!(cap_of(Some("avx2")), (Some(SimdLevel::Avx2), None));
        assert_eq!(cap_of(None), (None, None));
        assert_eq!(cap_of(Some(" ")), (None, None));
        let (cap, warning) = cap_of(Some("avx-2"));
        assert_eq!(cap, None);
        let warning = warning.expect("a warning for an unknown level");
        assert!(warning.contains("\"avx-2\"") && warning.contains("scalar, avx2 or avx512"));
    }

    /// Under `just test-simd` the cap is set: the dispatcher every kernel uses obeys it.
    #[test]
    fn the_environment_cap_reaches_the_dispatcher() {
        if let Some(cap) = std::env::var("GLASSBOX_SIMD")
            .ok()
            .and_then(|v| SimdLevel::parse(&v))
        {
            assert!(level() <= cap, "{:?} above the cap {cap:?}", level());
        }
    }
}
