//! The AWS CLI's shared files, for S3 settings the environment leaves unset: static keys from
//! `~/.aws/credentials` and the region and endpoint from `~/.aws/config`, for the profile
//! `AWS_PROFILE` names (else `default`). `object_store` reads only the environment; AWS's own
//! tools read these files too, so a machine set up with `aws configure` works as it is.
//! Paths follow `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`. SSO, `credential_process`
//! and role chaining are not followed (the environment, or an instance or web-identity role
//! that `object_store` finds on its own, covers those machines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the profile sets; each field `None` where the environment already sets it, or the
/// files do not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AwsProfile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl AwsProfile {
    /// The current profile's settings that the environment does not override.
    pub fn from_files() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = env("HOME").map(PathBuf::from);
        let file = |var: &str, name: &str| {
            env(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
        };
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
            .map(|p| read_section(&p, &profile))
            .unwrap_or_default();
        let config_section = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        let config = file("AWS_CONFIG_FILE", "config")
            .map(|p| read_section(&p, &config_section))
            .unwrap_or_default();
        let pick = |vars: &[&str], from: &BTreeMap<String, String>, key: &str| {
            if vars.iter().any(|v| env(v).is_some()) {
                None
            } else {
                from.get(key).cloned()
            }
        };
        // Keys come as a pair: the environment's pair, or the file's.
        let keys_in_env = env("AWS_ACCESS_KEY_ID").is_some();
        let from_file = |key: &str| {
            (!keys_in_env)
                .then(|| credentials.get(key).or_else(|| config.get(key)).cloned())
                .flatten()
        };
        Self {
            access_key_id: from_file("aws_access_key_id"),
            secret_access_key: from_file("aws_secret_access_key"),
            session_token: from_file("aws_session_token"),
            region: pick(&["AWS_REGION", "AWS_DEFAULT_REGION"], &config, "region"),
            endpoint_url: pick(
                &["AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
                &config,
                "endpoint_url",
            ),
        }
    }
}

/// `key = value` lines of `[section]` in an INI file (empty when the file or section is
/// missing; the AWS files' comments and nested `s3 =` blocks are skipped).
fn read_section(path: &Path, section: &str) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    parse_section(&text, section)
}

fn parse_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        // Indented lines belong to a nested block (`s3 =\n  addressing_style = …`).
        if !inside || line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_section_is_read_and_nested_blocks_skipped() {
        let text = "\
# comment
[default]
region = eu-west-1
aws_access_key_id = AKIA1

[profile lab]
region=us-east-2
endpoint_url = http://127.0.0.1:9000
s3 =
  addressing_style = path
aws_secret_access_key = s
";
        let lab = parse_section(text, "profile lab");
        assert_eq!(lab.get("region").map(String::as_str), Some("us-east-2"));
        assert_eq!(
            lab.get("endpoint_url").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            lab.get("aws_secret_access_key").map(String::as_str),
            Some("s")
        );
        assert!(!lab.contains_key("addressing_style"));
        assert!(!lab.contains_key("aws_access_key_id"));
        let default = parse_section(text, "default");
        assert_eq!(default.get("region").map(String::as_str), Some("eu-west-1"));
        assert!(parse_section(text, "missing").is_empty());
    }
}
