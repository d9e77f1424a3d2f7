/// Errors from probing; each names the label column or hook at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("label column `{column}`: {message}")]
    Label { column: String, message: String },
    #[error("hook `{hook}`: {message}")]
    Hook {
        hook: glassbox_data::HookPoint,
        message: String,
    },
    #[error("probe fit failed: {0}")]
    Fit(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
}

impl ProbeError {
    pub(crate) fn in_hook(self, hook: glassbox_data::HookPoint) -> ProbeError {
        match self {
            ProbeError::Fit(message) | ProbeError::Invalid(message) => {
                ProbeError::Hook { hook, message }
            }
            other => other,
        }
    }
}
