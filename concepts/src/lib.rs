//! glassbox-concepts: concept vectors (TCAV) and sparse dictionary features over the store.
//!
//! Empty in the walking skeleton: TCAV and sparse autoencoders arrive with their own issues.
//! The crate exists now so the workspace layout and dependency direction (analysis crates read
//! the store, never the models) are fixed from the start.
