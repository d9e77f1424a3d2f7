//! A real Azure Blob Storage server process for the `az://` tests: Azurite, Microsoft's
//! emulator (the npm package, installed into `.tools/azurite` by `just azurite`), on a free local
//! port with its data in a temporary folder, stopped when dropped. glassbox reaches it through
//! `object_store`'s Azure client (`AZURE_STORAGE_USE_EMULATOR`, the emulator's well-known
//! account); the tests check what it holds with `azure-storage-blob`, Microsoft's Python client.

use crate::{python_with, workspace_root};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The emulator's well-known development account (public, documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct AzuriteServer {
    child: Child,
    port: u16,
    python: PathBuf,
    _data: tempfile::TempDir,
}

impl AzuriteServer {
    /// Starts the server, or says why it cannot (Azurite or the Python client missing).
    pub fn start() -> Result<Self, String> {
        let python = python_with("azure.storage.blob")?;
        let server = workspace_root().join(".tools/azurite/node_modules/.bin/azurite-blob");
        if !server.exists() {
            return Err(format!(
                "{} is missing; run `just azurite`",
                server.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let data = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let child = Command::new(&server)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
        let this = Self {
            child,
            port,
            python,
            _data: data,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err("Azurite did not listen within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(this)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={}/{ACCOUNT};",
            self.endpoint()
        )
    }

    /// Runs `script` (Python, with `service` an `azure-storage-blob` client) with `args`.
    fn client(&self, script: &str, args: &[&str], what: &str) {
        let prelude = "import sys\nfrom azure.storage.blob import BlobServiceClient\nservice = BlobServiceClient.from_connection_string(sys.argv[1])\n";
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .arg(self.connection_string())
            .args(args)
            .output()
            .unwrap();
        crate::assert_success(&out, what);
    }

    pub fn create_container(&self, container: &str) {
        self.client(
            "service.create_container(sys.argv[2])",
            &[container],
            "creating the container",
        );
    }

    /// A `glassbox` command set up for this server (the emulator's account, its URL) with
    /// `cache` as the mirror folder root.
    pub fn glassbox(&self, cache: &Path) -> Command {
        let mut cmd = crate::glassbox();
        cmd.current_dir(workspace_root())
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", self.endpoint())
            .env("GLASSBOX_REMOTE_CACHE", cache);
        cmd
    }

    /// Downloads every blob under `container/prefix` into `dest` (dot-named ones included).
    pub fn download(&self, container: &str, prefix: &str, dest: &Path) {
        let script = r#"
import os
container, prefix, dest = sys.argv[2:5]
client = service.get_container_client(container)
for blob in client.list_blobs(name_starts_with=prefix + "/"):
    path = os.path.join(dest, blob.name[len(prefix) + 1:])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(client.download_blob(blob.name).readall())
"#;
        self.client(
            script,
            &[container, prefix, &dest.display().to_string()],
            "azure-storage-blob download",
        );
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
