//! Cluster-robust tests of a unit's correlation with a class, texts as clusters.
//!
//! A text's tokens are not independent: they share its topic, style and length, so a unit and a
//! token class that both lean with the text look correlated over rows far more surely than the
//! number of texts allows; a sequence-level class is the same on every token of a text, and
//! counting its tokens as observations would multiply the evidence by the text length. The
//! test here is the OLS slope of the activation on class membership
//! with the cluster-robust (sandwich) variance over texts — statsmodels' `cov_type="cluster"`:
//! CR1, `G/(G−1) · (N−1)/(N−2)`, on `G − 1` degrees of freedom (Cameron & Miller 2015, §II–III).
//!
//! The rows stream past once, so each text's sums are folded into second moments as the text
//! ends. With `x` the class indicator and `e = y − ȳ − b(x − x̄)`, a text's score is
//! `S_g = Σ_g (x − x̄) e = A_g + α Y_g + β X_g + γ n_g` — `A_g = Σ_g x y`, `Y_g = Σ_g y`,
//! `X_g = Σ_g x`, `n_g` its rows; `α = −x̄`, `β = −ȳ − b(1 − 2x̄)`, `γ = x̄ȳ − b x̄²` known only at
//! the end — so `Σ_g S_g²` is a quadratic form in the moments of `(A, Y, X, n)` kept per unit ×
//! class.

use std::collections::HashSet;

/// Sums of products of each text's `(A, Y, X, n)` over the texts seen, per unit × class slot.
pub(super) struct ClusterMoments {
    slots: usize,
    // The text being read.
    current: Option<u64>,
    n_g: f64,
    x_g: Vec<f64>,
    y_g: Vec<f64>,
    a_g: Vec<f64>,
    touched: Vec<usize>,
    is_touched: Vec<bool>,
    present: Vec<usize>,
    // Over texts: per unit × slot, per unit, per slot, overall.
    aa: Vec<f64>,
    ay: Vec<f64>,
    ax: Vec<f64>,
    an: Vec<f64>,
    yx: Vec<f64>,
    yy: Vec<f64>,
    yn: Vec<f64>,
    xx: Vec<f64>,
    xn: Vec<f64>,
    nn: f64,
    texts: u64,
    done: HashSet<u64>,
    /// A text's rows came back after another text's: its sums were already folded, so the
    /// clusters are not whole and no clustered test is given.
    interleaved: bool,
}

/// A clustered test of one unit × class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ClusteredTest {
    pub t: f64,
    pub p: f64,
    /// Texts (clusters) the test counts.
    pub clusters: u64,
}

impl ClusterMoments {
    /// Moments of `units` against `slots` classes (every class of every label, flattened).
    pub fn new(units: usize, slots: usize) -> Self {
        let per_pair = if slots > 0 { units * slots } else { 0 };
        let per_unit = if slots > 0 { units } else { 0 };
        Self {
            slots,
            current: None,
            n_g: 0.0,
            x_g: vec![0.0; slots],
            y_g: vec![0.0; per_unit],
            a_g: vec![0.0; per_pair],
            touched: Vec::new(),
            is_touched: vec![false; per_unit],
            present: Vec::new(),
            aa: vec![0.0; per_pair],
            ay: vec![0.0; per_pair],
            ax: vec![0.0; per_pair],
            an: vec![0.0; per_pair],
            yx: vec![0.0; per_pair],
            yy: vec![0.0; per_unit],
            yn: vec![0.0; per_unit],
            xx: vec![0.0; slots],
            xn: vec![0.0; slots],
            nn: 0.0,
            texts: 0,
            done: HashSet::new(),
            interleaved: false,
        }
    }

    /// Distinct texts the rows came from (0 without classes to test: then nothing is tracked).
    pub fn distinct_texts(&self) -> u64 {
        self.done.len() as u64
    }

    /// Whether there are classes to test (else every call is a no-op).
    pub fn active(&self) -> bool {
        self.slots > 0
    }

    /// A row of text `text` in the class slots `slots` begins.
    pub fn row(&mut self, text: u64, slots: &[usize]) {
        if !self.active() {
            return;
        }
        if self.current != Some(text) {
            self.end_text();
            if !self.done.insert(text) {
                self.interleaved = true;
            }
            self.current = Some(text);
        }
        self.n_g += 1.0;
        for &k in slots {
            if self.x_g[k] == 0.0 {
                self.present.push(k);
            }
            self.x_g[k] += 1.0;
        }
    }

    /// The current row's activation `v` of `unit`, whose row is in `slots`.
    pub fn value(&mut self, unit: usize, v: f64, slots: &[usize]) {
        if !self.active() || v == 0.0 {
            return;
        }
        if !self.is_touched[unit] {
            self.is_touched[unit] = true;
            self.touched.push(unit);
        }
        self.y_g[unit] += v;
        for &k in slots {
            self.a_g[unit * self.slots + k] += v;
        }
    }

    /// Folds the current text's sums into the moments.
    fn end_text(&mut self) {
        if self.current.is_none() {
            return;
        }
        let n = self.n_g;
        self.texts += 1;
        self.nn += n * n;
        for &k in &self.present {
            let x = self.x_g[k];
            self.xx[k] += x * x;
            self.xn[k] += x * n;
        }
        for &u in &self.touched {
            let y = self.y_g[u];
            self.yy[u] += y * y;
            self.yn[u] += y * n;
            for &k in &self.present {
                let at = u * self.slots + k;
                let (a, x) = (self.a_g[at], self.x_g[k]);
                self.aa[at] += a * a;
                self.ay[at] += a * y;
                self.ax[at] += a * x;
                self.an[at] += a * n;
                self.yx[at] += y * x;
                self.a_g[at] = 0.0;
            }
            self.y_g[u] = 0.0;
            self.is_touched[u] = false;
        }
        for &k in &self.present {
            self.x_g[k] = 0.0;
        }
        self.touched.clear();
        self.present.clear();
        self.n_g = 0.0;
        self.current = None;
    }

    /// Ends the last text; call once every row has been added.
    pub fn finish(&mut self) {
        self.end_text();
    }

    /// The clustered test of `unit` against class `slot`, from the run's totals: `rows`,
    /// `sum_y` (the unit's activations), `class_sum` (its activations on the class's rows) and
    /// `count` (the class's rows). `None` with interleaved texts or fewer than three texts.
    pub fn test(
        &self,
        unit: usize,
        slot: usize,
        (rows, sum_y, class_sum, count): (u64, f64, f64, u64),
    ) -> Option<ClusteredTest> {
        let k = slot;
        let g = self.texts;
        if self.interleaved || g < 3 || rows < 3 || k >= self.slots {
            return None;
        }
        let n = rows as f64;
        let (x_bar, y_bar) = (count as f64 / n, sum_y / n);
        let var_x = x_bar * (1.0 - x_bar);
        if var_x <= 0.0 {
            return None;
        }
        let b = (class_sum / n - x_bar * y_bar) / var_x;
        let (alpha, beta, gamma) = (
            -x_bar,
            -y_bar - b * (1.0 - 2.0 * x_bar),
            x_bar * y_bar - b * x_bar * x_bar,
        );
        let at = unit * self.slots + k;
        let scores = self.aa[at]
            + alpha * alpha * self.yy[unit]
            + beta * beta * self.xx[k]
            + gamma * gamma * self.nn
            + 2.0 * alpha * self.ay[at]
            + 2.0 * beta * self.ax[at]
            + 2.0 * gamma * self.an[at]
            + 2.0 * alpha * beta * self.yx[at]
            + 2.0 * alpha * gamma * self.yn[unit]
            + 2.0 * beta * gamma * self.xn[k];
        let gf = g as f64;
        let correction = gf / (gf - 1.0) * (n - 1.0) / (n - 2.0);
        let variance = scores.max(0.0) / (n * var_x).powi(2) * correction;
        let df = gf - 1.0;
        let (t, p) = if variance > 0.0 {
            let t = b / variance.sqrt();
            (t, crate::stats::student_t_two_sided(t, df))
        } else if b == 0.0 {
            (0.0, 1.0)
        } else {
            // Every text's score is zero: the slope is the same in every text, exactly.
            (b.signum() * f64::INFINITY, 0.0)
        };
        Some(ClusteredTest { t, p, clusters: g })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glassbox_data::rng::SeededRng;

    /// Rows `(text, class, activations)` through the moments, then every unit × class tested
    /// with the totals computed here.
    fn tests_of(
        rows: &[(u64, usize, Vec<f64>)],
        units: usize,
        classes: usize,
    ) -> Vec<Option<ClusteredTest>> {
        let mut m = ClusterMoments::new(units, classes);
        for (text, class, acts) in rows {
            m.row(*text, &[*class]);
            for (u, &v) in acts.iter().enumerate() {
                m.value(u, v, &[*class]);
            }
        }
        m.finish();
        let n = rows.len() as u64;
        let mut out = Vec::new();
        for u in 0..units {
            let sum_y: f64 = rows.iter().map(|r| r.2[u]).sum();
            for k in 0..classes {
                let mine = rows.iter().filter(|r| r.1 == k);
                let class_sum: f64 = mine.clone().map(|r| r.2[u]).sum();
                out.push(m.test(u, k, (n, sum_y, class_sum, mine.count() as u64)));
            }
        }
        out
    }

    /// statsmodels' `OLS(y, [1, x]).fit(cov_type="cluster", groups=text, use_t=True)` on 353
    /// token rows in 40 texts (scripts/reference_clustered_correlation.py): t and p to 1e-9.
    #[test]
    fn matches_statsmodels_cluster_robust_ols() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/clustered_correlation_reference.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows: Vec<(u64, usize, Vec<f64>)> = fixture["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["text"].as_u64().unwrap(),
                    r["class"].as_u64().unwrap() as usize,
                    r["activations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect(),
                )
            })
            .collect();
        let got = tests_of(&rows, 3, 3);
        for want in fixture["tests"].as_array().unwrap() {
            let (u, k) = (
                want["unit"].as_u64().unwrap(),
                want["class"].as_u64().unwrap(),
            );
            let test = got[(u * 3 + k) as usize].unwrap();
            let (t, p) = (want["t"].as_f64().unwrap(), want["p"].as_f64().unwrap());
            assert_eq!(test.clusters as f64, want["df"].as_f64().unwrap() + 1.0);
            assert!(
                (test.t - t).abs() <= 1e-9 * t.abs(),
                "unit {u} class {k}: t {} against {t}",
                test.t
            );
            assert!(
                (test.p - p).abs() <= 1e-9 * p.max(1e-300),
                "unit {u} class {k}: p {} against {p}",
                test.p
            );
        }
    }

    /// No relation, but the unit and the class each lean with the text (a text-level shift of
    /// the activation, a text-level share of the class; independent of each other): over
    /// independent data sets, counting rows as independent calls the pair correlated far more
    /// often than 5% of the time; the clustered test about 5% (Moulton's problem).
    #[test]
    fn text_level_confounding_is_not_a_finding() {
        let (sets, texts) = (200, 30);
        let mut rng = SeededRng::new(11);
        let mut normal = move || rng.gaussian();
        let (mut clustered, mut as_rows) = (0, 0);
        for _ in 0..sets {
            let mut rows = Vec::new();
            for g in 0..texts {
                let lean = normal();
                let shift = 2.0 * normal();
                for _ in 0..20 {
                    let class = usize::from(normal() + 1.5 * lean > 0.0);
                    rows.push((g as u64, class, vec![shift + normal()]));
                }
            }
            let n = rows.len() as f64;
            let test = tests_of(&rows, 1, 2)[1].unwrap();
            clustered += usize::from(test.p < 0.05);
            // The same correlation with every row counted.
            let x: Vec<f64> = rows.iter().map(|r| r.1 as f64).collect();
            let y: Vec<f64> = rows.iter().map(|r| r.2[0]).collect();
            let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
            let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
            let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
            let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
            let r = sxy / (sxx * syy).sqrt();
            let t = r * ((n - 2.0) / (1.0 - r * r)).sqrt();
            as_rows += usize::from(crate::stats::student_t_two_sided(t, n - 2.0) < 0.05);
        }
        eprintln!("clustered {clustered}/{sets}, rows {as_rows}/{sets}");
        assert!(as_rows > sets / 4 && as_rows > 3 * clustered, "{as_rows}");
        assert!(clustered <= sets / 10, "{clustered} of {sets}");
    }

    #[test]
    fn interleaved_texts_and_too_few_texts_give_no_test() {
        let rows = |texts: &[u64]| -> Vec<(u64, usize, Vec<f64>)> {
            texts
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, i % 2, vec![i as f64]))
                .collect()
        };
        assert!(tests_of(&rows(&[0, 0, 1, 1, 2, 2, 3]), 1, 2)[0].is_some());
        assert!(
            tests_of(&rows(&[0, 1, 0, 2, 3, 3]), 1, 2)[0].is_none(),
            "text 0 came back"
        );
        assert!(
            tests_of(&rows(&[0, 0, 1, 1, 1]), 1, 2)[0].is_none(),
            "two texts"
        );
    }
}
