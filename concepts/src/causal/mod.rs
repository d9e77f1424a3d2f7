//! Causal validation of directions: does the model *use* what a probe, a CAV or an SAE feature
//! found? For every finding the report lists, the causal stage intervenes along its direction
//! at its hook — adds `α · n · v` for `α` on a grid, `n` the hook's typical activation norm, and
//! (for sequence-level probes) erases the concept with LEACE — and measures a downstream
//! readout (a later probe, the TCAV target, the next-token distribution) against the same
//! intervention along random directions of equal norm.
//!
//! This crate holds the model-free half: which tests a run calls for ([`plan()`]), LEACE
//! ([`leace`]) and the probe refit after erasure ([`erasure`]), the statistics and verdicts
//! ([`stats`]) and the tables ([`results`]). The forwards are `glassbox_runner::steering`'s.

pub mod erasure;
pub mod leace;
pub mod options;
pub mod plan;
pub mod results;
pub mod stats;

pub use options::CausalOptions;
pub use plan::{
    plan, probe_finding, tcav_finding, unit_finding, ClassSpec, Intervention, PlanContext, Planned,
    ReadoutSpec,
};
pub use results::{read_curves, read_tests, write_curves, write_tests, CurveRow, TestRow};
pub use stats::{compare, Claim, Comparison, Verdict};
