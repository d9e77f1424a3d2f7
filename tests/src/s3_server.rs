//! A real S3-compatible server process for the object-storage tests: moto's standalone server
//! (`moto_server`, installed by `just venv`), on a free local port, stopped when dropped. The
//! tests talk to it through glassbox's own client and check what it holds with boto3, an
//! independent client.

use crate::{python_with, workspace_root};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    child: Child,
    port: u16,
    python: PathBuf,
}

impl S3Server {
    /// Starts the server, or says why it cannot (no venv with moto).
    pub fn start() -> Result<Self, String> {
        let python = python_with("moto.server")?;
        let server = python.with_file_name("moto_server");
        if !server.is_file() {
            return Err(format!("{} is missing; run `just venv`", server.display()));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
        let started = Instant::now();
        let this = Self {
            child,
            port,
            python,
        };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err("moto_server did not listen within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(this)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One unauthenticated request (moto does not check signatures); returns the status code.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The object's bytes, or `None` when it is absent, read with boto3 (moto refuses unsigned
    /// reads).
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let script = r#"
import boto3, sys
endpoint, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                  region_name="us-east-1")
try:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
except s3.exceptions.NoSuchKey:
    sys.exit(3)
sys.stdout.buffer.write(body)
"#;
        let out = Command::new(&self.python)
            .args(["-c", script, &self.endpoint(), bucket, key])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => Some(out.stdout),
            Some(3) => None,
            _ => panic!(
                "boto3 get of {key} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let status = self.request("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(status, 200, "putting {key}");
    }

    /// Deletes with boto3 (moto refuses unsigned deletes).
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let script = r#"
import boto3, sys
endpoint, bucket, key = sys.argv[1:4]
boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
             region_name="us-east-1").delete_object(Bucket=bucket, Key=key)
"#;
        let out = Command::new(&self.python)
            .args(["-c", script, &self.endpoint(), bucket, key])
            .output()
            .unwrap();
        crate::assert_success(&out, &format!("boto3 delete of {key}"));
    }

    /// A `glassbox` command set up for this server: credentials, endpoint, plain HTTP, and
    /// `cache` as the mirror folder root.
    pub fn glassbox(&self, cache: &Path) -> Command {
        let mut cmd = crate::glassbox();
        cmd.current_dir(workspace_root())
            .env("AWS_ACCESS_KEY_ID", "glassbox-test")
            .env("AWS_SECRET_ACCESS_KEY", "glassbox-test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("GLASSBOX_REMOTE_CACHE", cache);
        cmd
    }

    /// Downloads every object under `bucket/prefix` into `dest` with boto3 (dot-named
    /// objects such as the lease included, so the test sees them too).
    pub fn download(&self, bucket: &str, prefix: &str, dest: &Path) {
        let script = r#"
import boto3, os, sys
endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x",
                  aws_secret_access_key="x", region_name="us-east-1")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for item in page.get("Contents", []):
        rel = item["Key"][len(prefix) + 1:]
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, item["Key"], path)
"#;
        let out = Command::new(&self.python)
            .args(["-c", script, &self.endpoint(), bucket, prefix])
            .arg(dest)
            .output()
            .unwrap();
        crate::assert_success(&out, "boto3 download");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
