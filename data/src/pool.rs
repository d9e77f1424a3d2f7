//! Sequence-level pooling of token activations. Padding never enters a pool: the batcher hands
//! over only each example's real tokens (special tokens included, as sentence-transformers does).

use std::fmt;
use std::str::FromStr;

/// How token activations are summarised into one row per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    /// Mean over the example's tokens.
    Mean,
    /// The first token (`[CLS]` for BERT-family models).
    Cls,
    /// The last token (the usual summary token for causal models).
    Last,
    /// Element-wise maximum over the example's tokens.
    Max,
}

impl Pool {
    /// Pools `rows` (row-major `n × width`) into `out` (`width`).
    pub fn apply(self, rows: &[f32], width: usize, out: &mut [f32]) {
        let n = rows.len() / width;
        debug_assert!(n > 0 && out.len() == width);
        match self {
            Pool::Cls => out.copy_from_slice(&rows[..width]),
            Pool::Last => out.copy_from_slice(&rows[(n - 1) * width..]),
            Pool::Mean => {
                out.fill(0.0);
                for row in rows.chunks_exact(width) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
                let scale = 1.0 / n as f32;
                out.iter_mut().for_each(|o| *o *= scale);
            }
            Pool::Max => {
                out.copy_from_slice(&rows[..width]);
                for row in rows.chunks_exact(width).skip(1) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o = o.max(*v);
                    }
                }
            }
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pool::Mean => "mean",
            Pool::Cls => "cls",
            Pool::Last => "last",
            Pool::Max => "max",
        })
    }
}

/// A pooling name that is not one of [`Pool::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pool `{0}` (pooling must be one of mean, cls, last, max)")]
pub struct UnknownPool(pub String);

impl Pool {
    /// Every pooling, in the order `--help` lists them.
    pub const ALL: [Pool; 4] = [Pool::Mean, Pool::Cls, Pool::Last, Pool::Max];
}

impl FromStr for Pool {
    type Err = UnknownPool;
    fn from_str(s: &str) -> Result<Self, UnknownPool> {
        match s {
            "mean" => Ok(Pool::Mean),
            "cls" => Ok(Pool::Cls),
            "last" => Ok(Pool::Last),
            "max" => Ok(Pool::Max),
            other => Err(UnknownPool(other.to_owned())),
        }
    }
}

impl serde::Serialize for Pool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools() {
        let rows = [1.0, -1.0, 3.0, 5.0, 2.0, 0.0];
        let mut out = [0.0; 2];
        Pool::Mean.apply(&rows, 2, &mut out);
        assert_eq!(out, [2.0, 4.0 / 3.0]);
        Pool::Cls.apply(&rows, 2, &mut out);
        assert_eq!(out, [1.0, -1.0]);
        Pool::Last.apply(&rows, 2, &mut out);
        assert_eq!(out, [2.0, 0.0]);
        Pool::Max.apply(&rows, 2, &mut out);
        assert_eq!(out, [3.0, 5.0]);
        assert!("median".parse::<Pool>().is_err());
    }
}
