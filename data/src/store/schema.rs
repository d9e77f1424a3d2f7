use crate::{HookPoint, Pool};
use arrow_schema::{DataType, Field, Schema};
use std::collections::HashMap;
use std::sync::Arc;

/// Prefix of glassbox's keys in Parquet key-value metadata.
pub const META_PREFIX: &str = "glassbox.";

/// Storage precision of the `act` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActDtype {
    /// 32-bit floats (exact).
    #[serde(alias = "float32")]
    F32,
    /// 16-bit floats (half the disk; ~3 significant digits).
    #[serde(alias = "float16")]
    F16,
}

impl std::fmt::Display for ActDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            ActDtype::F32 => "f32",
            ActDtype::F16 => "f16",
        }
    }
    pub fn arrow(self) -> DataType {
        match self {
            ActDtype::F32 => DataType::Float32,
            ActDtype::F16 => DataType::Float16,
        }
    }
}

impl std::str::FromStr for ActDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(ActDtype::F32),
            "f16" | "float16" => Ok(ActDtype::F16),
            other => Err(format!("unknown dtype `{other}`; use f32 or f16")),
        }
    }
}

/// Compression of activation shards. Float activations compress poorly, so the default is
/// none; zstd trades write speed for roughly a tenth less disk (see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Uncompressed (the default: float activations compress poorly).
    #[serde(alias = "uncompressed")]
    None,
    /// Snappy: fast, little gain on floats.
    Snappy,
    /// Zstandard: slower writes, ~8% smaller on MiniLM activations.
    Zstd,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Snappy => "snappy",
            Codec::Zstd => "zstd",
        }
    }
    pub fn parquet(self) -> parquet::basic::Compression {
        match self {
            Codec::None => parquet::basic::Compression::UNCOMPRESSED,
            Codec::Snappy => parquet::basic::Compression::SNAPPY,
            Codec::Zstd => parquet::basic::Compression::ZSTD(Default::default()),
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "uncompressed" => Ok(Codec::None),
            "snappy" => Ok(Codec::Snappy),
            "zstd" => Ok(Codec::Zstd),
            other => Err(format!(
                "unknown compression `{other}`; use none, snappy or zstd"
            )),
        }
    }
}

/// What a store file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One row per (example, token position).
    Activation,
    /// One row per example, pooled over its tokens.
    Pooled,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Activation => "activation",
            StoreKind::Pooled => "pooled",
        }
    }
    pub fn has_position(self) -> bool {
        matches!(self, StoreKind::Activation)
    }
}

/// Provenance written into every shard's key-value metadata.
#[derive(Debug, Clone)]
pub struct ShardMeta {
    pub model_id: String,
    pub revision: String,
    pub hook: HookPoint,
    pub kind: StoreKind,
    pub pool: Option<Pool>,
    pub width: usize,
    pub dtype: ActDtype,
    pub compression: Codec,
}

impl ShardMeta {
    pub fn key_values(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            ("model_id", self.model_id.clone()),
            ("revision", self.revision.clone()),
            ("hook", self.hook.to_string()),
            ("kind", self.kind.as_str().to_owned()),
            ("width", self.width.to_string()),
            ("dtype", self.dtype.as_str().to_owned()),
            // Depth in the residual stream and block index, so analysis stages (and
            // notebooks) can order hooks without knowing the model.
            ("depth", self.hook.depth().to_string()),
            ("version", crate::manifest::GLASSBOX_VERSION.to_owned()),
        ];
        if let Some(layer) = self.hook.layer() {
            kv.push(("layer", layer.to_string()));
        }
        if let Some(pool) = self.pool {
            kv.push(("pool", pool.to_string()));
        }
        kv.into_iter()
            .map(|(k, v)| (format!("{META_PREFIX}{k}"), v))
            .collect()
    }
}

/// Arrow schema of an activation or pooled shard.
pub fn activation_schema(meta: &ShardMeta) -> Arc<Schema> {
    let mut fields = vec![Field::new("example_id", DataType::UInt64, false)];
    if meta.kind.has_position() {
        fields.push(Field::new("position", DataType::UInt32, false));
    }
    let item = Arc::new(Field::new("item", meta.dtype.arrow(), false));
    fields.push(Field::new(
        "act",
        DataType::FixedSizeList(item, meta.width as i32),
        false,
    ));
    let metadata: HashMap<String, String> = meta.key_values().into_iter().collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}
