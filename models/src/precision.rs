//! Which families compute in which precision: the `--compute-dtype` setting and the family
//! lists that both the registry (at load) and the model trait's refusal name. A module of its
//! own so that `model` need not depend on `registry`.

/// Families whose forward reads weights in reduced precision, converting a layer's matrices to
/// f32 as it runs them; the others hold f32 weights (their fast kernels read f32 in place).
/// `auto` keeps a bf16/f16 checkpoint as stored for these.
pub const REDUCED_PRECISION_FAMILIES: &[&str] = &[
    "gemma2",
    "gemma3_text",
    "gemma3",
    "qwen3",
    "olmo2",
    "olmo3",
    "phi3",
];

/// The precision of the matrix products in the packed (extraction) forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ComputeDtype {
    /// f32 products from f32 (or exactly widened bf16/f16) weights: parity with `transformers`
    /// in f32 to 1e-4.
    #[default]
    F32,
    /// bf16 × bf16 products summed in f32 (activations rounded to bf16 at each projection's
    /// input; norms, attention and the residual stream stay f32), on AVX-512 BF16's dot
    /// products where the CPU has them and through the f32 GEMM with the same rounding where
    /// it does not. For [`BF16_COMPUTE_FAMILIES`] with weights held in bf16.
    Bf16,
}

/// Configs take the CLI's spellings (`bfloat16` as well as `bf16`).
impl TryFrom<String> for ComputeDtype {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for ComputeDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown compute dtype `{other}`; use f32 or bf16")),
        }
    }
}

impl ComputeDtype {
    /// The name configs and manifests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// Families whose packed forward can run bf16 products (`--compute-dtype bf16`): the shared
/// decoder's, and Llama-family checkpoints held in bf16 (which run on it).
pub const BF16_COMPUTE_FAMILIES: &[&str] = REDUCED_PRECISION_FAMILIES;
