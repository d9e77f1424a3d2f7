//! What a model reads: token sequences or images. Recorded in the manifest, so stages tell a
//! text run from an image run without loading the model.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Token sequences (examples are texts, positions are tokens).
    Text,
    /// Images (examples are image files, positions are feature-map cells or patches).
    Vision,
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Modality::Text => "text",
            Modality::Vision => "vision",
        })
    }
}
