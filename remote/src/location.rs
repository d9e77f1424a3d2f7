//! Parsing `--run` values: a local folder, or a URL on object storage, and where the local
//! mirror of a remote run lives.

use crate::error::{RemoteError, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// URL schemes `--run` accepts for object storage.
pub const SCHEMES: [&str; 9] = [
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "file",
];

/// A run on object storage: `scheme://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The URL as given, without a trailing `/`.
    pub url: String,
    pub scheme: String,
    /// Bucket / container (empty for `file://`).
    pub bucket: String,
    /// The run's prefix inside the bucket, without leading or trailing `/` (for `file://`,
    /// the absolute folder).
    pub prefix: String,
}

/// Whether a `--run` value names object storage (`xx://…`) rather than a local folder.
pub fn is_remote(run: &Path) -> bool {
    run.to_str().is_some_and(|s| s.contains("://"))
}

impl RemoteUrl {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |message: &str| RemoteError::BadUrl {
            url: text.to_owned(),
            message: message.to_owned(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://bucket/prefix"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(bad(&format!(
                "unknown scheme `{scheme}`; glassbox opens {} (or a local folder path)",
                SCHEMES.map(|s| format!("{s}://")).join(", ")
            )));
        }
        let url = text.trim_end_matches('/').to_owned();
        if scheme == "file" {
            let path = rest.trim_end_matches('/');
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path (file:///data/runs/x)",
                ));
            }
            return Ok(Self {
                url,
                scheme,
                bucket: String::new(),
                prefix: path.trim_start_matches('/').to_owned(),
            });
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is missing"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err(bad(
                "give the run a folder inside the bucket (s3://bucket/runs/name): glassbox does not write a run over a bucket's root",
            ));
        }
        Ok(Self {
            url,
            scheme,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `self.url` joined with a run-relative key.
    pub fn join(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// The local mirror folder of this run under `cache`: readable name plus a hash of the URL.
    pub fn mirror_dir(&self, cache: &Path) -> PathBuf {
        let digest = Sha256::digest(self.url.as_bytes());
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let tail = self.prefix.rsplit('/').next().unwrap_or_default();
        let readable: String = format!("{}-{}-{tail}", self.scheme, self.bucket)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        cache.join(format!("{readable}-{hash}"))
    }
}

/// Where mirrors of remote runs live: `GLASSBOX_REMOTE_CACHE`, else
/// `$XDG_CACHE_HOME/glassbox/remote-runs`, else `~/.cache/glassbox/remote-runs`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLASSBOX_REMOTE_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("glassbox").join("remote-runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let u = RemoteUrl::parse("s3://bucket/runs/minilm/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("bucket", "runs/minilm")
        );
        assert_eq!(u.url, "s3://bucket/runs/minilm");
        assert_eq!(
            u.join("manifest.json"),
            "s3://bucket/runs/minilm/manifest.json"
        );
        let f = RemoteUrl::parse("file:///data/runs/x").unwrap();
        assert_eq!(f.prefix, "data/runs/x");
        assert!(is_remote(Path::new("gs://b/p")));
        assert!(!is_remote(Path::new("runs/x")));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, needle) in [
            ("ftp://b/p", "unknown scheme `ftp`"),
            ("s3:///p", "bucket name is missing"),
            ("s3://bucket", "folder inside the bucket"),
            ("file://relative/x", "absolute path"),
        ] {
            let e = RemoteUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn mirror_dirs_differ_per_url() {
        let a = RemoteUrl::parse("s3://b/runs/x")
            .unwrap()
            .mirror_dir(Path::new("/c"));
        let b = RemoteUrl::parse("s3://b/other/x")
            .unwrap()
            .mirror_dir(Path::new("/c"));
        assert_ne!(a, b);
        assert!(a.to_string_lossy().starts_with("/c/s3-b-x-"));
    }
}
