//! The Parquet activation store (design §5).
//!
//! Layout, per run: `activations/hook=<hook>/part-NNNNN.parquet` (one row per token: `example_id`,
//! `position`, `act`), `pooled/hook=<hook>/pool=<pool>/part-NNNNN.parquet` (one row per example:
//! `example_id`, `act`). `act` is `FixedSizeList<Float32 | Float16, width>`. Model id, revision, hook,
//! width, dtype and kind are in each file's key-value metadata. Files are streamed: one row group
//! per written batch, so memory is bounded by the batch, never by the data set.

mod reader;
mod schema;
mod writer;

pub use reader::{
    read_metadata, read_part_extent, read_parts, read_pooled_matrix, ActivationBatch, PartExtent,
    PartStream, PooledMatrix,
};
pub use schema::{activation_schema, ActDtype, Codec, ShardMeta, StoreKind, META_PREFIX};
pub use writer::ActivationWriter;
