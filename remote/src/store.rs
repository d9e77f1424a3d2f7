//! A blocking face on an `object_store` client: glassbox's stages are synchronous, so every
//! call runs on a small Tokio runtime owned by the store.

use crate::error::{RemoteError, Result};
use crate::location::RemoteUrl;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Objects at most this large go up in one request; larger ones in multipart chunks of it.
pub const PART_BYTES: usize = 16 << 20;
/// Requests in flight at once when many objects move (and multipart chunks per object).
pub const CONCURRENCY: usize = 8;

/// One object listed under the run's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the run (`activations/hook=…/part-00000.parquet`).
    pub rel: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// The settings of the AWS CLI's profile that the environment leaves unset (see
/// [`crate::aws_profile`]).
fn with_aws_profile(
    mut builder: object_store::aws::AmazonS3Builder,
) -> object_store::aws::AmazonS3Builder {
    let profile = crate::aws_profile::AwsProfile::from_files();
    if let (Some(id), Some(secret)) = (profile.access_key_id, profile.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
        if let Some(token) = profile.session_token {
            builder = builder.with_token(token);
        }
    }
    if let Some(region) = profile.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = profile.endpoint_url {
        // An endpoint the user configured as plain HTTP (a local MinIO) is meant as such.
        let http = endpoint.starts_with("http://");
        builder = builder.with_endpoint(endpoint).with_allow_http(http);
    }
    builder
}

/// A run's prefix in a bucket, with a client and the runtime that drives it.
pub struct RemoteStore {
    pub url: RemoteUrl,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
}

impl RemoteStore {
    /// Connects (lazily: nothing is sent yet) with credentials from the environment, as each
    /// cloud's own tools read them.
    pub fn connect(url: &RemoteUrl) -> Result<Self> {
        install_tls_provider();
        let fail = |e| RemoteError::store(&url.url, "configuring the client", e);
        // Fail in seconds, not the client's default three minutes, when the endpoint is wrong.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(30),
            ..Default::default()
        };
        let bucket_url = format!("{}://{}", url.scheme, url.bucket);
        let store: Arc<dyn ObjectStore> = match url.scheme.as_str() {
            "s3" | "s3a" => Arc::new(
                with_aws_profile(object_store::aws::AmazonS3Builder::from_env())
                    .with_url(bucket_url)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(bucket_url)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            ),
            "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(bucket_url)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            ),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("glassbox-remote")
            .enable_all()
            .build()
            .map_err(|source| RemoteError::Io {
                path: "tokio runtime".into(),
                source,
            })?;
        Ok(Self {
            prefix: Key::from(url.prefix.as_str()),
            url: url.clone(),
            store,
            runtime,
        })
    }

    fn key(&self, rel: &str) -> Key {
        Key::from(format!("{}/{rel}", self.prefix))
    }

    fn error(&self, operation: &str, rel: &str, e: object_store::Error) -> RemoteError {
        let target = if rel.is_empty() {
            String::new()
        } else {
            format!(" {rel}")
        };
        RemoteError::store(&self.url.url, format!("{operation}{target}"), e)
    }

    /// Every object under the run's prefix.
    pub fn list(&self) -> Result<Vec<Listed>> {
        self.list_under("")
    }

    /// Every object under `rel` (a run-relative folder such as `.staging/extract`; empty for
    /// the whole run), with run-relative paths.
    pub fn list_under(&self, rel: &str) -> Result<Vec<Listed>> {
        let prefix = self.prefix.clone();
        let under = if rel.is_empty() {
            prefix.clone()
        } else {
            self.key(rel.trim_end_matches('/'))
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&under)).try_collect())
            .map_err(|e| self.error("listing", rel, e))?;
        let mut out: Vec<Listed> = listed
            .into_iter()
            .filter_map(|m| {
                let rel = m
                    .location
                    .prefix_match(&prefix)?
                    .map(|p| p.as_ref().to_owned());
                let rel = rel.collect::<Vec<_>>().join("/");
                (!rel.is_empty()).then_some(Listed {
                    rel,
                    size: m.size,
                    e_tag: m.e_tag,
                })
            })
            .collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// The whole object, or `None` when it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel);
        let got = self.runtime.block_on(async {
            match self.store.get(&key).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| self.error("reading", rel, e))
    }

    /// Bytes `start..end` of an object.
    pub fn get_range(&self, rel: &str, start: u64, end: u64) -> Result<Bytes> {
        let key = self.key(rel);
        self.runtime
            .block_on(self.store.get_range(&key, start..end))
            .map_err(|e| self.error("reading", rel, e))
    }

    /// Downloads objects into files, [`CONCURRENCY`] at a time, each streamed to a temp file and
    /// renamed into place. Returns each object's e-tag as the server reported it.
    pub fn download_all(
        &self,
        jobs: &[(String, std::path::PathBuf)],
    ) -> Result<Vec<Option<String>>> {
        self.runtime.block_on(
            futures::stream::iter(jobs.iter().map(|(rel, path)| self.download(rel, path)))
                .buffered(CONCURRENCY)
                .try_collect(),
        )
    }

    async fn download(&self, rel: &str, path: &Path) -> Result<Option<String>> {
        use std::io::Write;
        let key = self.key(rel);
        let result = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.error("reading", rel, e))?;
        let e_tag = result.meta.e_tag.clone();
        let io = |source| RemoteError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = glassbox_data::atomic::temp_path(path);
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("reading", rel, e))?;
            file.write_all(&chunk).map_err(io)?;
        }
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(e_tag)
    }

    /// Uploads files, [`CONCURRENCY`] at a time, streaming each from disk (multipart above
    /// [`PART_BYTES`]). Returns each object's e-tag.
    pub fn upload_all(&self, jobs: &[(String, std::path::PathBuf)]) -> Result<Vec<Option<String>>> {
        self.runtime.block_on(
            futures::stream::iter(jobs.iter().map(|(rel, path)| self.upload(rel, path)))
                .buffered(CONCURRENCY)
                .try_collect(),
        )
    }

    async fn upload(&self, rel: &str, path: &Path) -> Result<Option<String>> {
        let key = self.key(rel);
        let io = |source| RemoteError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let put = if size as usize <= PART_BYTES {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io)?;
            self.store.put(&key, PutPayload::from(bytes)).await
        } else {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| self.error("uploading", rel, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(CONCURRENCY)
                    .await
                    .map_err(|e| self.error("uploading", rel, e))?;
                writer.write(&buf[..n]);
            }
            writer.finish().await
        };
        put.map(|r| r.e_tag)
            .map_err(|e| self.error("uploading", rel, e))
    }

    /// Writes a small object in one request (overwriting).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<Option<String>> {
        let key = self.key(rel);
        self.runtime
            .block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|r| r.e_tag)
            .map_err(|e| self.error("writing", rel, e))
    }

    /// Writes a small object only if none exists; `Ok(false)` when one does.
    pub fn put_if_absent(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let key = self.key(rel);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .runtime
            .block_on(self.store.put_opts(&key, PutPayload::from(bytes), options))
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.error("creating", rel, e)),
        }
    }

    /// Copies objects inside the store (server-side: the bytes do not come here),
    /// [`CONCURRENCY`] at a time.
    pub fn copy_all(&self, moves: &[(String, String)]) -> Result<()> {
        self.runtime.block_on(
            futures::stream::iter(moves.iter().map(|(from, to)| async move {
                self.store
                    .copy(&self.key(from), &self.key(to))
                    .await
                    .map_err(|e| self.error("copying", &format!("{from} to {to}"), e))
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// Deletes objects, [`CONCURRENCY`] at a time; missing ones are not an error.
    pub fn delete_all(&self, rels: &[String]) -> Result<()> {
        self.runtime.block_on(
            futures::stream::iter(rels.iter().map(|rel| async move {
                match self.store.delete(&self.key(rel)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.error("deleting", rel, e)),
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }
}

/// rustls needs a process-wide crypto provider; ring is the one already in the build.
fn install_tls_provider() {
    // Err means one is installed already (by us earlier, or by another client): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
