//! `glassbox inspect RUN`: what a run holds, from its manifest and store metadata.

use anyhow::{Context, Result};
use glassbox_data::run::list_parts;
use glassbox_data::shards::ShardPlan;
use glassbox_data::store::read_metadata;
use glassbox_data::{HookPoint, Manifest, Pool, RunDir};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct HookInfo {
    hook: HookPoint,
    width: Option<usize>,
    dtype: Option<String>,
    token_parts: usize,
    pools: Vec<Pool>,
}

#[derive(Debug, Serialize)]
struct Inspection {
    run: String,
    manifest: Manifest,
    hooks: Vec<HookInfo>,
    /// Stages with an interrupted attempt staged (their completed results, if any, are intact).
    interrupted: Vec<String>,
    /// The shards of each sharded stage in progress (empty when there is none).
    shards: Vec<ShardInfo>,
}

#[derive(Debug, Serialize)]
struct ShardInfo {
    stage: String,
    shard: String,
    /// `complete`, `running`, `interrupted` or `not started`.
    state: &'static str,
    parts_done: usize,
    parts: usize,
}

pub fn inspect(run: &RunDir, json: bool) -> Result<()> {
    let interrupted = crate::stages::transaction::interrupted(run);
    // On object storage a shard runs wherever its lease is held, not only on this machine.
    let leased = crate::run_location::leased_shards(run)?;
    let mut shards: Vec<ShardInfo> = Vec::new();
    for stage in glassbox_data::shards::SHARDED_STAGES {
        let Some(plan) = ShardPlan::load(run.root(), stage)? else {
            continue;
        };
        shards.extend(plan.status(run.root()).into_iter().map(|mut s| {
            s.running |= leased.contains(&(s.index, s.count));
            ShardInfo {
                stage: plan.stage.clone(),
                shard: format!("{}/{}", s.index, s.count),
                state: s.state(),
                parts_done: s.parts_done,
                parts: s.parts,
            }
        }));
    }
    // A run: a manifest, or a first stage that was interrupted before writing one.
    if !run.manifest().is_file() && interrupted.is_empty() {
        anyhow::bail!(
            "{} is not a run directory (it has no manifest.json); pass the --run folder of a `glassbox extract` or `glassbox pipeline`",
            crate::run_location::run_name(run)
        );
    }
    let manifest = Manifest::load_or_default(run)
        .with_context(|| format!("cannot read {}", run.manifest().display()))?;
    let mut hooks = Vec::new();
    let mut names = run.stored_hooks(false)?;
    names.extend(run.stored_hooks(true)?);
    names.sort_by_cached_key(ToString::to_string);
    names.dedup();
    for hook in names {
        let token_parts = list_parts(&run.activations_dir(hook))?;
        let mut pools = Vec::new();
        let pooled = run.pooled_root().join(format!("hook={hook}"));
        if pooled.is_dir() {
            for entry in std::fs::read_dir(&pooled)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some(p) = name
                    .strip_prefix("pool=")
                    .and_then(|p| p.parse::<Pool>().ok())
                {
                    pools.push(p);
                }
            }
        }
        pools.sort_by_cached_key(ToString::to_string);
        let first = token_parts.first().cloned().or_else(|| {
            pools
                .first()
                .and_then(|p| list_parts(&run.pooled_dir(hook, *p)).ok()?.first().cloned())
        });
        let meta = first
            .map(|p| read_metadata(&p))
            .transpose()?
            .unwrap_or_default();
        hooks.push(HookInfo {
            hook,
            width: meta.get("glassbox.width").and_then(|w| w.parse().ok()),
            dtype: meta.get("glassbox.dtype").cloned(),
            token_parts: token_parts.len(),
            pools,
        });
    }
    let report = Inspection {
        run: crate::run_location::run_name(run),
        manifest,
        hooks,
        interrupted,
        shards,
    };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    crate::outln!("run: {}", report.run)?;
    if let Some(m) = &report.manifest.model {
        crate::outln!(
            "model: {} @ {} ({}, {})",
            m.id,
            m.revision,
            m.family,
            m.source
        )?;
    }
    if let Some(d) = &report.manifest.data {
        crate::outln!(
            "data: {} ({} examples, {} tokens, sha256 {})",
            d.path,
            d.n_examples,
            d.n_tokens,
            d.sha256
        )?;
    }
    for (stage, r) in &report.manifest.stages {
        // Which build and instruction set computed the stage; "this build" saves reading hashes.
        let build = r.build.as_ref().map_or(String::new(), |b| {
            let whose = if b.source == crate::fingerprint::SOURCE_ID {
                "this build".to_owned()
            } else {
                format!("another build, source {}", b.source)
            };
            format!(", {whose}, {}", b.simd)
        });
        crate::outln!(
            "stage {stage}: finished {} (fingerprint {}{build})",
            r.finished_at,
            &r.fingerprint[..12.min(r.fingerprint.len())]
        )?;
    }
    let sharded: Vec<&str> = report.shards.iter().map(|s| s.stage.as_str()).collect();
    for s in &report.shards {
        crate::outln!(
            "shard {} of `{}`: {} ({} of {} parts)",
            s.shard,
            s.stage,
            s.state,
            s.parts_done,
            s.parts
        )?;
    }
    let mut stages = sharded.clone();
    stages.dedup();
    for stage in stages {
        let missing: Vec<&str> = report
            .shards
            .iter()
            .filter(|s| s.stage == stage && s.parts_done < s.parts)
            .map(|s| s.shard.as_str())
            .collect();
        crate::outln!(
            "sharded `{stage}`: {}",
            if missing.is_empty() {
                "every part written; run any shard again to commit the run".to_owned()
            } else {
                format!(
                    "not complete; shards {} still to finish (run `glassbox {stage} … --shard i/N` for each, same settings)",
                    missing.join(", ")
                )
            }
        )?;
    }
    for stage in report
        .interrupted
        .iter()
        .filter(|s| !sharded.contains(&s.as_str()))
    {
        crate::outln!(
            "interrupted: a `{stage}` run was stopped before it finished (the results above are \
             untouched); run the same command again to resume it"
        )?;
    }
    for h in &report.hooks {
        crate::outln!(
            "hook {}: width {}, {}, {} token parts, pools [{}]",
            h.hook,
            h.width.map(|w| w.to_string()).unwrap_or_else(|| "?".into()),
            h.dtype.as_deref().unwrap_or("?"),
            h.token_parts,
            h.pools
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(())
}
