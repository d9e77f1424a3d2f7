//! Limited-memory BFGS for smooth objectives, with a backtracking Armijo line search.
//!
//! The stopping rules are scipy's L-BFGS-B ones as scikit-learn uses them: the largest gradient
//! component at most `gradient_tolerance`, or a relative decrease of the objective below
//! `2.2e-9` (scipy's `factr = 1e7` times machine epsilon), or `max_iterations`.

/// How a minimisation ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub value: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub converged: bool,
}

/// Minimises `f` from `x` in place. `f(x, grad)` returns the objective and writes its gradient.
pub fn minimize(
    x: &mut [f64],
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iterations: usize,
    gradient_tolerance: f64,
) -> Outcome {
    const MEMORY: usize = 10;
    const ARMIJO: f64 = 1e-4;
    const RELATIVE_DECREASE: f64 = 2.2e-9;
    let n = x.len();
    let mut grad = vec![0.0; n];
    let mut value = f(x, &mut grad);
    let mut evaluations = 1;
    // Curvature pairs, oldest first.
    let mut s_hist: Vec<Vec<f64>> = Vec::with_capacity(MEMORY);
    let mut y_hist: Vec<Vec<f64>> = Vec::with_capacity(MEMORY);
    let mut rho_hist: Vec<f64> = Vec::with_capacity(MEMORY);
    let mut direction = vec![0.0; n];
    let mut alpha = [0.0; MEMORY];
    let mut x_new = vec![0.0; n];
    let mut grad_new = vec![0.0; n];
    for iteration in 0..max_iterations {
        if max_abs(&grad) <= gradient_tolerance {
            return Outcome {
                value,
                iterations: iteration,
                evaluations,
                converged: true,
            };
        }
        // Two-loop recursion: direction = -H·grad.
        direction.iter_mut().zip(&grad).for_each(|(d, g)| *d = -g);
        for i in (0..s_hist.len()).rev() {
            alpha[i] = rho_hist[i] * dot(&s_hist[i], &direction);
            axpy(-alpha[i], &y_hist[i], &mut direction);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            // First step: a unit-length move along the gradient.
            _ => 1.0 / norm(&grad).max(1e-12),
        };
        direction.iter_mut().for_each(|d| *d *= gamma);
        for i in 0..s_hist.len() {
            let beta = rho_hist[i] * dot(&y_hist[i], &direction);
            axpy(alpha[i] - beta, &s_hist[i], &mut direction);
        }
        let mut slope = dot(&grad, &direction);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            direction.iter_mut().zip(&grad).for_each(|(d, g)| *d = -g);
            slope = -dot(&grad, &grad);
        }
        // Backtracking line search on the Armijo condition.
        let mut step = 1.0;
        let mut new_value;
        loop {
            x_new
                .iter_mut()
                .zip(x.iter().zip(&direction))
                .for_each(|(xn, (xi, d))| *xn = xi + step * d);
            new_value = f(&x_new, &mut grad_new);
            evaluations += 1;
            if new_value.is_finite() && new_value <= value + ARMIJO * step * slope {
                break;
            }
            step *= 0.5;
            if step < 1e-20 {
                return Outcome {
                    value,
                    iterations: iteration,
                    evaluations,
                    converged: false,
                };
            }
        }
        let s: Vec<f64> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = grad_new.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y) {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho_hist.push(1.0 / sy);
        }
        x.copy_from_slice(&x_new);
        grad.copy_from_slice(&grad_new);
        let decrease = (value - new_value) / value.abs().max(new_value.abs()).max(1.0);
        value = new_value;
        if decrease <= RELATIVE_DECREASE {
            return Outcome {
                value,
                iterations: iteration + 1,
                evaluations,
                converged: true,
            };
        }
    }
    Outcome {
        value,
        iterations: max_iterations,
        evaluations,
        converged: max_abs(&grad) <= gradient_tolerance,
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(yi, xi)| *yi += a * xi);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock_minimum() {
        let mut x = vec![-1.2, 1.0];
        let out = minimize(
            &mut x,
            |x, g| {
                let (a, b) = (x[0], x[1]);
                g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
                g[1] = 200.0 * (b - a * a);
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
            },
            500,
            1e-8,
        );
        assert!(out.converged, "{out:?}");
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }
}
