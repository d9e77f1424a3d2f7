//! TCAV target specs — `probe:<label>=<class>[@<hook>]`, `token:<text>`, `class:<label>` —
//! parsed once, for the TCAV stage that resolves them against a model and the causal stage that
//! reads them back.

use crate::{ConceptError, Convention};
use glassbox_data::HookPoint;

/// A parsed target: `probe:<label>=<class>[@<hook>]`, `token:<text>` (a causal LM's logit
/// for `<text>`, one token, as the next token after each example's last token), or
/// `class:<label>` (a text classifier's own class logit).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub spec: String,
    pub label: String,
    pub class: String,
    pub hook: Option<HookPoint>,
    /// Set for `token:` targets.
    pub token: Option<String>,
    /// Set for `class:` targets: the classifier's class name.
    pub head_class: Option<String>,
}

impl TargetSpec {
    pub fn parse(spec: &str) -> Result<Self, ConceptError> {
        let (kind, rest) = spec.split_once(':').unwrap_or(("", spec));
        // A target read off the model itself rather than a probe of the run.
        let model_target = |token: Option<String>, head_class: Option<String>| Self {
            spec: spec.to_owned(),
            label: String::new(),
            class: String::new(),
            hook: None,
            token,
            head_class,
        };
        match kind {
            "probe" => {}
            "token" if !rest.is_empty() => return Ok(model_target(Some(rest.to_owned()), None)),
            "class" if !rest.is_empty() => return Ok(model_target(None, Some(rest.to_owned()))),
            _ => {
                return Err(invalid(format!(
                    "target `{spec}`: expected probe:<label>=<class>[@<hook>], token:<text> or class:<label>"
                )))
            }
        }
        // `@<hook>` only when what follows the last `@` names a hook, so labels may contain `@`;
        // the class is after the last `=`, so labels may contain `=`.
        let (body, hook) = match rest.rsplit_once('@') {
            Some((b, h)) => match h.parse::<HookPoint>() {
                Ok(hook) => (b, Some(hook)),
                Err(_) => (rest, None),
            },
            None => (rest, None),
        };
        let (label, class) = body.rsplit_once('=').ok_or_else(|| {
            invalid(format!(
                "target `{spec}`: expected probe:<label>=<class>[@<hook>]"
            ))
        })?;
        Ok(Self {
            spec: spec.to_owned(),
            label: label.to_owned(),
            class: class.to_owned(),
            hook,
            token: None,
            head_class: None,
        })
    }

    /// A folder-safe name with the convention: `probe.topic.food.logit`.
    pub fn slug(&self, convention: Convention) -> String {
        let clean: String = format!("{}.{}", self.spec, convention.as_str())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        clean
    }
}

fn invalid(message: String) -> ConceptError {
    ConceptError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_odd_labels() {
        let t = TargetSpec::parse("probe:topic=food").unwrap();
        assert_eq!(
            (t.label.as_str(), t.class.as_str(), t.hook),
            ("topic", "food", None)
        );
        let t = TargetSpec::parse("probe:a=b=c@blocks.5.hook_resid_post").unwrap();
        assert_eq!((t.label.as_str(), t.class.as_str()), ("a=b", "c"));
        assert_eq!(t.hook, Some(HookPoint::ResidPost(5)));
        let t = TargetSpec::parse("probe:user@host=yes").unwrap();
        assert_eq!(t.slug(Convention::Loss), "probe.user.host.yes.loss");
        assert_eq!(
            (t.label.as_str(), t.class.as_str(), t.hook),
            ("user@host", "yes", None)
        );
        let t = TargetSpec::parse("token: Paris").unwrap();
        assert_eq!(t.token.as_deref(), Some(" Paris"));
        assert_eq!(t.slug(Convention::Logit), "token..Paris.logit");
        let t = TargetSpec::parse("class:positive").unwrap();
        assert_eq!(t.head_class.as_deref(), Some("positive"));
        assert_eq!(t.slug(Convention::Logit), "class.positive.logit");
        assert!(TargetSpec::parse("class:").is_err());
        assert!(TargetSpec::parse("probe:nolabel").is_err());
    }
}
