//! The path integral of integrated gradients, `∫₀¹ ∇f(x' + α(x − x')) dα`, as a weighted sum over
//! `steps` points α — with the same rules (and the same default) as Captum's
//! `captum.attr._utils.approximation_methods`, so step counts mean the same thing in both. One
//! deliberate difference: Captum's trapezoid weighs its n points by 1/n (ends halved), so its
//! weights sum to (n − 1)/n and its attributions come out (n − 1)/n too small; here they sum
//! to 1 (weights 1/(n − 1)), and completeness holds.

use serde::{Deserialize, Serialize};

/// How the integral over α ∈ [0, 1] is approximated. Configs read every spelling the CLI
/// takes (`gausslegendre`, Captum's, as well as `gauss_legendre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum IgRule {
    /// Gauss–Legendre nodes and weights (Captum's default): exact for polynomials of degree
    /// 2·steps − 1 in α.
    #[default]
    GaussLegendre,
    /// Left Riemann sum: α = 0, 1/n, …, (n−1)/n.
    RiemannLeft,
    /// Right Riemann sum: α = 1/n, …, 1.
    RiemannRight,
    /// Midpoints: α = (i + ½)/n.
    RiemannMiddle,
    /// Trapezoids over α = 0, 1/(n−1), …, 1 (ends weighted by half).
    RiemannTrapezoid,
    /// Midpoints of segments refined where the path integral is least complete: each
    /// segment's `f(b) − f(a)` is known from forwards, so a segment whose midpoint gradient
    /// misses it is split in thirds (the middle third keeps the midpoint). Same number of
    /// gradients as `steps`, plus about as many forwards; see
    /// [`super::methods::integrated_gradients_adaptive`].
    Adaptive,
}

impl IgRule {
    /// The rule's name as configs and tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IgRule::GaussLegendre => "gausslegendre",
            IgRule::RiemannLeft => "riemann_left",
            IgRule::RiemannRight => "riemann_right",
            IgRule::RiemannMiddle => "riemann_middle",
            IgRule::RiemannTrapezoid => "riemann_trapezoid",
            IgRule::Adaptive => "adaptive",
        }
    }

    /// `(α, weight)` for each of `n ≥ 1` points; the weights sum to 1. The adaptive rule's
    /// points depend on the integrand; here it gives its starting midpoints.
    pub fn points(self, n: usize) -> Vec<(f64, f64)> {
        let n = n.max(1);
        let nf = n as f64;
        match self {
            IgRule::Adaptive => (0..n).map(|i| ((i as f64 + 0.5) / nf, 1.0 / nf)).collect(),
            IgRule::GaussLegendre => gauss_legendre(n)
                .into_iter()
                .map(|(x, w)| (0.5 * (x + 1.0), 0.5 * w))
                .collect(),
            IgRule::RiemannLeft => (0..n).map(|i| (i as f64 / nf, 1.0 / nf)).collect(),
            IgRule::RiemannRight => (1..=n).map(|i| (i as f64 / nf, 1.0 / nf)).collect(),
            IgRule::RiemannMiddle => (0..n).map(|i| ((i as f64 + 0.5) / nf, 1.0 / nf)).collect(),
            IgRule::RiemannTrapezoid if n == 1 => vec![(0.5, 1.0)],
            IgRule::RiemannTrapezoid => {
                let h = 1.0 / (nf - 1.0);
                (0..n)
                    .map(|i| {
                        let w = if i == 0 || i == n - 1 { h / 2.0 } else { h };
                        (i as f64 * h, w)
                    })
                    .collect()
            }
        }
    }
}

impl TryFrom<String> for IgRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for IgRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "gausslegendre" | "gauss_legendre" | "gauss-legendre" => IgRule::GaussLegendre,
            "riemann_left" | "riemann-left" => IgRule::RiemannLeft,
            "riemann_right" | "riemann-right" => IgRule::RiemannRight,
            "riemann_middle" | "riemann-middle" => IgRule::RiemannMiddle,
            "riemann_trapezoid" | "riemann-trapezoid" | "riemann" => IgRule::RiemannTrapezoid,
            "adaptive" => IgRule::Adaptive,
            other => {
                return Err(format!(
                "unknown integration rule `{other}`; use adaptive, gausslegendre, riemann_left, riemann_right, riemann_middle or riemann_trapezoid"
            ))
            }
        })
    }
}

/// Nodes and weights of `n`-point Gauss–Legendre quadrature on [−1, 1], ascending (numpy's
/// `leggauss`): Newton's method on the Legendre polynomial Pₙ from Chebyshev-like starts.
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // The i-th largest root lies near cos(π(i + ¾)/(n + ½)).
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (p, dp) = legendre(n, x);
            derivative = dp;
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let (_, dp) = legendre(n, x);
        derivative = if dp != 0.0 { dp } else { derivative };
        out.push((x, 2.0 / ((1.0 - x * x) * derivative * derivative)));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `(Pₙ(x), Pₙ'(x))` by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, dp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configs read the names the CLI and its help print (`gausslegendre`), not only serde's.
    #[test]
    fn configs_read_the_cli_spellings() {
        for name in ["gausslegendre", "gauss_legendre", "gauss-legendre"] {
            let rule: IgRule = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(rule, IgRule::GaussLegendre);
        }
        let e = serde_json::from_str::<IgRule>("\"simpson\"").unwrap_err();
        assert!(
            e.to_string().contains("unknown integration rule `simpson`"),
            "{e}"
        );
    }

    /// numpy.polynomial.legendre.leggauss(3): ±√(3/5) with weight 5/9, 0 with 8/9.
    #[test]
    fn three_point_rule_is_the_textbook_one() {
        let p = gauss_legendre(3);
        let r = (0.6f64).sqrt();
        let want = [(-r, 5.0 / 9.0), (0.0, 8.0 / 9.0), (r, 5.0 / 9.0)];
        for ((x, w), (wx, ww)) in p.iter().zip(want) {
            assert!((x - wx).abs() < 1e-14 && (w - ww).abs() < 1e-14, "{x} {w}");
        }
    }

    /// Every rule's weights sum to 1, and n-point Gauss–Legendre integrates α^(2n−1) exactly.
    #[test]
    fn rules_integrate_what_they_should() {
        for rule in [
            IgRule::GaussLegendre,
            IgRule::RiemannLeft,
            IgRule::RiemannRight,
            IgRule::RiemannMiddle,
            IgRule::RiemannTrapezoid,
            IgRule::Adaptive,
        ] {
            for n in [1, 2, 7, 64, 300] {
                let pts = rule.points(n);
                assert_eq!(pts.len(), n);
                let total: f64 = pts.iter().map(|p| p.1).sum();
                assert!((total - 1.0).abs() < 1e-12, "{rule:?} n={n}: {total}");
                assert!(pts.iter().all(|p| (0.0..=1.0).contains(&p.0)));
            }
        }
        for n in [1, 4, 16, 64] {
            let degree = 2 * n as i32 - 1;
            let integral: f64 = IgRule::GaussLegendre
                .points(n)
                .iter()
                .map(|(a, w)| w * a.powi(degree))
                .sum();
            let exact = 1.0 / (degree as f64 + 1.0);
            assert!(
                (integral - exact).abs() < 1e-12,
                "n={n}: {integral} vs {exact}"
            );
        }
    }
}
