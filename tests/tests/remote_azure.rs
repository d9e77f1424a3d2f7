//! Runs on Azure Blob Storage (`--run az://container/prefix`) against a real server process
//! (Azurite, Microsoft's emulator): an extraction, a probe that streams the activations by range,
//! and attributions by three shard workers with separate mirrors (leases, plan publication and
//! commit by conditional put on Azure) leave the container holding the local run byte for byte,
//! read back with Microsoft's Python client.

use glassbox_tests::azurite::AzuriteServer;
use glassbox_tests::sharded::{
    assert_no_staging_or_leases, extract_args, run_workers_together, tiny_gpt2, ATTRIBUTE, PROBE,
};
use glassbox_tests::*;
use std::path::Path;

const CONTAINER: &str = "glassbox-test";

#[test]
fn a_run_on_azure_blob_storage_is_the_local_run() {
    let az = match AzuriteServer::start() {
        Ok(s) => s,
        Err(why) => return skip("a_run_on_azure_blob_storage_is_the_local_run", &why),
    };
    az.create_container(CONTAINER);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local").display().to_string();
    let remote = format!("az://{CONTAINER}/runs/r1");
    for run in [&local, &remote] {
        let cache = tmp.path().join("cache");
        let extract = extract_args(&tiny_gpt2(), "blocks.*.hook_resid_post", Path::new(run));
        let out = az.glassbox(&cache).args(extract).output().unwrap();
        assert_success(&out, &format!("extract into {run}"));
        // Another machine's mirror for the probe: the activations are read from the container.
        let cache = tmp.path().join("probe-cache");
        let out = az
            .glassbox(&cache)
            .args(PROBE)
            .args(["--run", run])
            .output()
            .unwrap();
        assert_success(&out, &format!("probe of {run}"));
    }
    let out = az
        .glassbox(&tmp.path().join("c"))
        .args(ATTRIBUTE)
        .args(["--run", &local])
        .output()
        .unwrap();
    assert_success(&out, "local attribute");
    run_workers_together(
        (0..3)
            .map(|i| {
                let mut worker = az.glassbox(&tmp.path().join(format!("worker{i}")));
                worker
                    .args(ATTRIBUTE)
                    .args(["--run", &remote, "--shard", &format!("{i}/3")]);
                worker
            })
            .collect(),
    );
    let downloaded = tmp.path().join("downloaded");
    az.download(CONTAINER, "runs/r1", &downloaded);
    assert_no_staging_or_leases(&downloaded);
    assert_same_files(
        Path::new(&local),
        &downloaded,
        "the Azure run",
        Compare::FilesOnly,
    );
    let a = snapshot(&downloaded);
    assert!(a.keys().any(|k| k.starts_with("activations/")));
    assert!(a.keys().any(|k| k.starts_with("attributions/")));
}
