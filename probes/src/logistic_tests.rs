//! Unit tests of `logistic` (kept beside it, in their own file for length).
use super::*;

/// The mean cross-entropy and its gradient in f64 from the definition (softmax, or the
/// sigmoid for two classes), with the weights rounded to f32 as the kernel uses them when
/// `as_kernel`. Also returns a bound, per parameter, on how far the kernel's f32 arithmetic
/// may land from this gradient, and the same for the loss (last).
fn definition(p: &Problem<'_>, params: &[f64], as_kernel: bool) -> (f64, Vec<f64>, Vec<f64>, f64) {
    let (d, m, n) = (p.d, p.outputs(), p.n() as f64);
    let u = f32::EPSILON as f64 / 2.0;
    let gamma = |k: usize| k as f64 * u / (1.0 - k as f64 * u);
    let w = |i: usize, j: usize| {
        let v = params[i * m + j];
        if as_kernel {
            v as f32 as f64
        } else {
            v
        }
    };
    let (mut loss, mut loss_bound) = (0.0, 0.0);
    let (mut grad, mut bound) = (vec![0.0; params.len()], vec![0.0; params.len()]);
    for (r, &y) in p.y.iter().enumerate() {
        let x = |i: usize| p.x[r * d + i] as f64;
        let z: Vec<f64> = (0..m)
            .map(|j| (0..d).map(|i| x(i) * w(i, j)).sum::<f64>() + params[d * m + j])
            .collect();
        // An f32 dot product's error, in any summation order: γ_d Σ |x w|.
        let z_err = (0..m)
            .map(|j| gamma(d) * (0..d).map(|i| (x(i) * w(i, j)).abs()).sum::<f64>())
            .fold(0.0, f64::max);
        // log Σ exp and the target's logit each move by at most the logits' error.
        loss_bound += 2.0 * z_err / n;
        let dz: Vec<f64> = if m == 1 {
            let t = (y == 1) as u8 as f64;
            loss += z[0].max(0.0) + (-z[0].abs()).exp().ln_1p() - t * z[0];
            vec![1.0 / (1.0 + (-z[0]).exp()) - t]
        } else {
            let top = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - top).exp()).sum();
            loss += top + sum.ln() - z[y];
            (0..m)
                .map(|j| (z[j] - top).exp() / sum - (j == y) as u8 as f64)
                .collect()
        };
        for j in 0..m {
            // Logit errors of at most ε move a softmax or sigmoid probability by at most
            // 2ε; the kernel rounds dz to f32 and accumulates n rows in f32.
            let dz_err = 2.0 * z_err + u * dz[j].abs();
            for i in 0..d {
                grad[i * m + j] += dz[j] * x(i) / n;
                bound[i * m + j] += (dz_err + gamma(p.n()) * dz[j].abs()) * x(i).abs() / n;
            }
            grad[d * m + j] += dz[j] / n;
            bound[d * m + j] += 2.0 * z_err / n;
        }
    }
    (loss / n, grad, bound, loss_bound + 4.0 * u * loss.abs() / n)
}

/// The kernel's gradient equals the definition's within the error its f32 arithmetic
/// allows (a bound, so it holds at every SIMD level and summation order); the definition
/// itself is checked against central differences, in f64 throughout.
#[test]
fn gradient_matches_the_definition_and_finite_differences() {
    // 10 rows: two blocks of four and a partial one. Width 4 runs the row kernels'
    // scalar tails only; 37 their vector loops and a tail.
    for (d, k) in [(4usize, 2usize), (4, 3), (37, 2), (37, 5)] {
        let x: Vec<f32> = (0..10 * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / (3.0 * (d as f32 / 4.0).sqrt()))
            .collect();
        let y: Vec<usize> = (0..10).map(|i| i % k).collect();
        let p = Problem {
            x: &x,
            d,
            y: &y,
            n_classes: k,
        };
        let m = p.outputs();
        let params: Vec<f64> = (0..d * m + m)
            .map(|i| (0.1 * i as f64 - 0.3) / (d as f64 / 4.0))
            .collect();
        let mut g = vec![0.0; params.len()];
        let loss = cross_entropy(&p, &params, &mut g);
        let (def_loss, def_grad, bound, loss_bound) = definition(&p, &params, true);
        assert!(
            (loss - def_loss).abs() <= loss_bound,
            "{loss} vs {def_loss} (bound {loss_bound:e})"
        );
        let (_, exact_grad, ..) = definition(&p, &params, false);
        for i in 0..params.len() {
            assert!(
                (g[i] - def_grad[i]).abs() <= bound[i] + 1e-12,
                "d={d} k={k} i={i}: kernel {} vs definition {} (bound {:e})",
                g[i],
                def_grad[i],
                bound[i]
            );
            let h = 1e-5;
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric =
                (definition(&p, &plus, false).0 - definition(&p, &minus, false).0) / (2.0 * h);
            assert!(
                (numeric - exact_grad[i]).abs() < 1e-7,
                "d={d} k={k} i={i}: finite difference {numeric} vs {}",
                exact_grad[i]
            );
        }
    }
}

#[test]
fn separable_data_is_classified_and_l1_zeroes_noise_units() {
    // Unit 0 decides the class; units 1..4 are noise.
    let n = 200;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 2;
        x.push(if c == 1 { 1.0 } else { -1.0 } + ((i * 7 % 13) as f32 - 6.0) / 20.0);
        for u in 1..4 {
            x.push(((i * (u + 3) * 31 % 17) as f32 - 8.0) / 8.0);
        }
        y.push(c);
    }
    let p = Problem {
        x: &x,
        d: 4,
        y: &y,
        n_classes: 2,
    };
    let model = fit(&p, 1.0, 100, None);
    assert_eq!(model.predict(&x), y);
    let sparse = fit_elastic_net(&p, 0.05, 1e-3, 500);
    assert!(sparse.weights[0] > 0.5, "{:?}", sparse.weights);
    assert!(
        sparse.weights[1..].iter().all(|w| w.abs() < 1e-9),
        "{:?}",
        sparse.weights
    );
}
