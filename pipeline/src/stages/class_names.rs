//! A `class:<name>` target's class among a classifier's `id2label`, as every stage reads it
//! (attribute, TCAV, patch). ImageNet's labels are synonym lists ("tabby, tabby cat") and name
//! two classes twice ("crane" the bird and the machine, "maillot"), so besides the whole label
//! a target may name one synonym or the class index, and a name that fits two classes is
//! refused with their indices instead of silently taking the first.

/// The index of the class `name` names in `labels`: the whole label, else one of its
/// comma-separated synonyms, else a class index. `Err` says why not, with the classes nearest
/// to the name (the caller adds which target it was).
pub(crate) fn class_index(labels: &[String], name: &str) -> Result<usize, String> {
    let name = name.trim();
    let whole: Vec<usize> = matching(labels, |label| label == name);
    let found = if whole.is_empty() {
        matching(labels, |label| label.split(',').any(|s| s.trim() == name))
    } else {
        whole
    };
    match found.as_slice() {
        [one] => return Ok(*one),
        [_, _, ..] => {
            let which: Vec<String> = found
                .iter()
                .map(|i| format!("class:{i} (`{}`)", labels[*i]))
                .collect();
            return Err(format!(
                "`{name}` names {} classes; give the one you mean by index: {}",
                found.len(),
                which.join(", ")
            ));
        }
        [] => {}
    }
    if let Ok(index) = name.parse::<usize>() {
        if index < labels.len() {
            return Ok(index);
        }
        return Err(format!(
            "class index {index} is out of range: the model has {} classes (0–{})",
            labels.len(),
            labels.len().saturating_sub(1)
        ));
    }
    Err(format!(
        "no class `{name}`; {}",
        describe_classes(labels, name)
    ))
}

fn matching(labels: &[String], fits: impl Fn(&str) -> bool) -> Vec<usize> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| fits(l))
        .map(|(i, _)| i)
        .collect()
}

/// The model's classes (all of a short list; else those whose label contains the name, and
/// the count), and that an index works too.
fn describe_classes(labels: &[String], name: &str) -> String {
    const SHOWN: usize = 20;
    if labels.len() <= SHOWN {
        return format!(
            "the model's classes (config.json's id2label) are {}",
            labels.join("; ")
        );
    }
    // Labels with the name as a whole word first ("cat": "tiger cat" before "bullfrog, Rana
    // catesbeiana"), then those that merely contain it.
    let lower = name.to_lowercase();
    let closeness = |label: &str| -> Option<u8> {
        let label = label.to_lowercase();
        if lower.is_empty() || !label.contains(&lower) {
            return None;
        }
        let as_word = label
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == lower);
        Some(if as_word { 0 } else { 1 })
    };
    let mut ranked: Vec<(u8, usize)> = labels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| closeness(l).map(|c| (c, i)))
        .collect();
    ranked.sort();
    let close: Vec<String> = ranked
        .iter()
        .take(8)
        .map(|&(_, i)| format!("{i} `{}`", labels[i]))
        .collect();
    let close = if close.is_empty() {
        format!("the first of them are {}", labels[..SHOWN].join("; "))
    } else {
        format!("labels containing it: {}", close.join(", "))
    };
    format!(
        "the model has {} classes (config.json's id2label; a label, one of its comma-separated \
         synonyms or an index 0–{} names one); {close}",
        labels.len(),
        labels.len() - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imagenet_like() -> Vec<String> {
        let mut labels: Vec<String> = (0..30).map(|i| format!("filler {i}")).collect();
        labels[3] = "tabby, tabby cat".into();
        labels[4] = "tiger cat".into();
        labels[7] = "crane".into();
        labels[21] = "crane".into();
        labels[9] = "maillot, tank suit".into();
        labels[10] = "maillot".into();
        labels
    }

    #[test]
    fn a_label_a_synonym_or_an_index_names_a_class() {
        let labels = imagenet_like();
        assert_eq!(class_index(&labels, "tabby, tabby cat"), Ok(3));
        assert_eq!(class_index(&labels, "tabby cat"), Ok(3));
        assert_eq!(class_index(&labels, "tabby"), Ok(3));
        assert_eq!(class_index(&labels, "tiger cat"), Ok(4));
        assert_eq!(class_index(&labels, "21"), Ok(21));
        // The whole label wins over another label's synonym.
        assert_eq!(class_index(&labels, "maillot"), Ok(10));
    }

    #[test]
    fn a_name_of_two_classes_and_an_unknown_one_are_refused_with_what_to_give() {
        let mut labels = imagenet_like();
        let e = class_index(&labels, "crane").unwrap_err();
        assert!(
            e.contains("names 2 classes") && e.contains("class:7") && e.contains("class:21"),
            "{e}"
        );
        labels[2] = "bullfrog, Rana catesbeiana".into();
        let e = class_index(&labels, "cat").unwrap_err();
        assert!(e.contains("no class `cat`"), "{e}");
        let (tabby, bullfrog) = (e.find("3 `tabby").unwrap(), e.find("2 `bullfrog").unwrap());
        assert!(
            e.contains("4 `tiger cat`") && tabby < bullfrog,
            "whole words first: {e}"
        );
        let e = class_index(&labels, "30").unwrap_err();
        assert!(e.contains("out of range") && e.contains("0–29"), "{e}");
        let short: Vec<String> = ["negative", "neutral", "positive"]
            .map(String::from)
            .to_vec();
        let e = class_index(&short, "sarcastic").unwrap_err();
        assert!(e.contains("negative; neutral; positive"), "{e}");
    }
}
