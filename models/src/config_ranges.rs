//! Range checks on the numeric `config.json` fields every family shares, made once before any
//! family reads them (and before the weights are read): a negative normalisation epsilon turns
//! the forward into NaN, which extraction would otherwise report as bad *weights*.

use serde_json::Value;

/// The names families give the epsilon inside their norms' square roots.
const EPSILON_KEYS: [&str; 5] = [
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "norm_eps",
    "batch_norm_eps",
];

/// Where nested configs keep their own fields (`gemma3`'s text tower, CLIP's two towers).
const NESTED: [&str; 2] = ["text_config", "vision_config"];

/// `Err` naming the first field out of range (`text_config.rms_norm_eps = -1 …`).
pub(crate) fn check(config: &Value) -> Result<(), String> {
    check_level(config, "")?;
    for nested in NESTED {
        if let Some(inner) = config.get(nested) {
            check_level(inner, &format!("{nested}."))?;
        }
    }
    Ok(())
}

fn check_level(config: &Value, prefix: &str) -> Result<(), String> {
    for key in EPSILON_KEYS {
        let Some(value) = config.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        match value.as_f64() {
            Some(eps) if eps.is_finite() && eps >= 0.0 => {}
            _ => {
                return Err(format!(
                    "{prefix}{key} = {value}; a norm's epsilon must be a finite number ≥ 0 (typically 1e-5 or 1e-6)"
                ))
            }
        }
    }
    Ok(())
}

/// `Err` naming both fields unless `heads` is positive and divides `width` (a head's size is
/// `width / heads`): `(name, value)` as the family's config spells them.
pub(crate) fn heads_divide(width: (&str, usize), heads: (&str, usize)) -> Result<(), String> {
    if heads.1 == 0 || !width.1.is_multiple_of(heads.1) {
        return Err(format!(
            "{} {} is not divisible by {} {}",
            width.0, width.1, heads.0, heads.1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    #[test]
    fn epsilons_must_be_finite_and_not_negative() {
        assert!(check(&json!({"rms_norm_eps": 1e-6, "layer_norm_eps": 0.0})).is_ok());
        assert!(check(&json!({"rms_norm_eps": null})).is_ok());
        let e = check(&json!({"layer_norm_epsilon": -1})).unwrap_err();
        assert!(e.starts_with("layer_norm_epsilon = -1;"), "{e}");
        let e = check(&json!({"text_config": {"rms_norm_eps": "tiny"}})).unwrap_err();
        assert!(e.starts_with("text_config.rms_norm_eps = \"tiny\";"), "{e}");
    }
}
