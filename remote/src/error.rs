//! What can go wrong with a run on object storage, each naming the URL and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("`{url}` is not a run location glassbox can open: {message}")]
    BadUrl { url: String, message: String },

    #[error("{url}: {operation} failed: {source}{hint}")]
    Store {
        url: String,
        operation: String,
        #[source]
        source: Box<object_store::Error>,
        /// A sentence saying what to check, with a leading separator (or empty).
        hint: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{url} is being written by {holder}; two writers must not mix their results in one run. Wait for it to finish, or, if no such process is running any more, delete `{lock}` and retry")]
    Busy {
        url: String,
        holder: String,
        lock: String,
    },

    #[error("{0}")]
    Data(#[from] glassbox_data::DataError),
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

impl RemoteError {
    /// Wraps an object-store error with the URL, the operation and a hint for the usual
    /// causes (credentials, bucket name, endpoint).
    pub fn store(url: &str, operation: impl Into<String>, source: object_store::Error) -> Self {
        let hint = hint_for(url, &source);
        Self::Store {
            url: url.to_owned(),
            operation: operation.into(),
            source: Box::new(source),
            hint,
        }
    }
}

fn hint_for(url: &str, error: &object_store::Error) -> String {
    let scheme = url.split("://").next().unwrap_or_default();
    let credentials = match scheme {
        "s3" | "s3a" => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or run where an instance/web-identity role applies; AWS_ENDPOINT_URL for an S3-compatible server",
        "gs" => "GOOGLE_SERVICE_ACCOUNT (a key file path) or GOOGLE_APPLICATION_CREDENTIALS",
        "az" | "azure" | "abfs" | "abfss" | "adl" => "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token / client secret)",
        _ => "",
    };
    let text = error.to_string();
    let denied = matches!(
        error,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || text.contains("403 Forbidden")
        || text.contains("401 Unauthorized")
        || text.contains("credential")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch");
    if text.contains("NoSuchBucket")
        || text.contains("ContainerNotFound")
        || text.contains("bucket does not exist")
    {
        return ". Check the bucket name in the URL (and AWS_REGION / the endpoint)".into();
    }
    // No credentials in the environment: the client falls back to the cloud's metadata
    // service, and what fails is that request, not the bucket's.
    let metadata_fallback = text.contains("api/token")
        || text.contains("169.254.169.254")
        || text.contains("metadata.google.internal")
        || text.contains("/metadata/identity");
    if metadata_fallback && !credentials.is_empty() {
        return format!(". No credentials were found in the environment and the instance-metadata service (the fallback) did not answer: set {credentials}");
    }
    if denied && !credentials.is_empty() {
        return format!(". Check the credentials: glassbox reads {credentials}");
    }
    if text.contains("error sending request")
        || text.contains("connect")
        || text.contains("dns")
        || text.contains("timed out")
    {
        return ". The storage endpoint could not be reached: check the network, the URL, and AWS_ENDPOINT_URL (or the cloud's endpoint setting) if you set one".into();
    }
    String::new()
}
