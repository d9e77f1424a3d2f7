//! Neuron ranking: an elastic-net probe on the training rows, units ranked per class by the
//! magnitude of their (standardised) weight, and overall (`class = "*"`) by the summed
//! magnitude over classes — NeuroX's weight-mass ranking. The ranking is checked by the
//! test accuracy of a probe restricted to the top-k units against k random units.

use crate::logistic::{self, Logistic, Problem};
use crate::metrics::accuracy;
use crate::probe::{pick, Rows};
use crate::ProbeOptions;
use glassbox_data::rng::SeededRng;

/// One ranked unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedUnit {
    /// Class name, or `*` for the ranking over all classes.
    pub class: String,
    pub unit: u32,
    /// Signed weight in standardised space (`*`: the summed magnitude).
    pub weight: f64,
    /// 1 = most important.
    pub rank: u32,
}

/// Top-k against random-k accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub k: u32,
    pub top_accuracy: f64,
    /// Mean over the random draws.
    pub random_accuracy: f64,
}

/// Ranks units from an elastic-net fit on the training rows.
pub fn rank(model: &Logistic, class_names: &[String]) -> Vec<RankedUnit> {
    let directions = model.class_directions();
    let d = model.d;
    let mut out = Vec::new();
    let mut push_ranking = |class: &str, weights: &[f64], mass: &[f64]| {
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| mass[b].total_cmp(&mass[a]).then(a.cmp(&b)));
        for (r, &u) in order.iter().enumerate() {
            out.push(RankedUnit {
                class: class.to_owned(),
                unit: u as u32,
                weight: weights[u],
                rank: r as u32 + 1,
            });
        }
    };
    let mut total = vec![0.0; d];
    for (c, w) in directions.iter().enumerate() {
        let mass: Vec<f64> = w.iter().map(|v| v.abs()).collect();
        total.iter_mut().zip(&mass).for_each(|(t, m)| *t += m);
        push_ranking(&class_names[c], w, &mass);
    }
    push_ranking("*", &total.clone(), &total);
    out
}

pub fn elastic_net(
    rows: Rows<'_>,
    classes: &[usize],
    n_classes: usize,
    opts: &ProbeOptions,
) -> Logistic {
    let x_train = rows.features(&rows.split.train, None);
    let y_train = pick(classes, &rows.split.train);
    let problem = Problem {
        x: &x_train,
        d: rows.d,
        y: &y_train,
        n_classes,
    };
    logistic::fit_elastic_net(
        &problem,
        opts.elastic_net_l1,
        opts.elastic_net_l2,
        opts.max_iterations.max(500),
    )
}

/// Test accuracy of probes on the top-k units of `overall` (the `*` ranking) and on random
/// k-unit subsets, for every k below the width.
pub fn top_k_check(
    rows: Rows<'_>,
    classes: &[usize],
    n_classes: usize,
    overall: &[u32],
    l2: f64,
    opts: &ProbeOptions,
    seed: u64,
) -> Vec<TopK> {
    let (d, split) = (rows.d, rows.split);
    let y_train = pick(classes, &split.train);
    let y_test = pick(classes, &split.test);
    let score = |units: &[usize]| {
        let x_train = rows.features(&split.train, Some(units));
        let problem = Problem {
            x: &x_train,
            d: units.len(),
            y: &y_train,
            n_classes,
        };
        let model = logistic::fit(&problem, l2, opts.max_iterations, None);
        accuracy(
            &y_test,
            &model.predict(&rows.features(&split.test, Some(units))),
        )
    };
    let mut rng = SeededRng::new(seed ^ 0x746f_706b);
    opts.top_k
        .iter()
        .filter(|&&k| k > 0 && k < d)
        .map(|&k| {
            let top: Vec<usize> = overall[..k].iter().map(|&u| u as usize).collect();
            let random_accuracy = (0..opts.random_draws.max(1))
                .map(|_| {
                    let mut units: Vec<usize> = (0..d).collect();
                    rng.shuffle(&mut units);
                    units.truncate(k);
                    score(&units)
                })
                .sum::<f64>()
                / opts.random_draws.max(1) as f64;
            TopK {
                k: k as u32,
                top_accuracy: score(&top),
                random_accuracy,
            }
        })
        .collect()
}
