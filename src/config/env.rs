//! `${VAR}` interpolation, so that secrets live in the environment rather
//! than in the file.
//!
//! Expansion runs on the raw text before TOML parsing so that line numbers in
//! later error messages stay true. Values are escaped for a TOML basic string,
//! so a secret containing `"` or `\` cannot change the file's structure.
//! `${NAME:-default}` uses `default` when `NAME` is unset or empty, and
//! `$${` stands for a literal `${`.

use crate::problems::ConfigProblem;

/// Replaces every `${NAME}` in `text` using `lookup`; reports every unset or
/// malformed reference at once.
pub(super) fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<ConfigProblem>> {
    let mut expanded = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find('$') {
            expanded.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(stripped) = after.strip_prefix("$${") {
                expanded.push_str("${");
                rest = stripped;
            } else if let Some(reference) = after.strip_prefix("${") {
                let column = line.len() - after.len() + 1;
                let Some(end) = reference.find('}') else {
                    problems.push(problem(
                        line_index,
                        column,
                        "unterminated `${`: write `${NAME}`, or `$${` for a literal",
                    ));
                    rest = reference;
                    continue;
                };
                let (name, default) = match reference[..end].split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (&reference[..end], None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(problem(
                        line_index,
                        column,
                        &format!("`${{{name}}}` is not a valid variable name (letters, digits and `_` only)"),
                    ));
                } else if let Some(value) = lookup(name).filter(|value| !value.is_empty() || default.is_none()) {
                    push_escaped(&mut expanded, &value);
                } else if let Some(default) = default {
                    push_escaped(&mut expanded, default);
                } else {
                    problems.push(problem(
                        line_index,
                        column,
                        &format!("environment variable {name} is not set: export it or remove the reference"),
                    ));
                }
                rest = &reference[end + 1..];
            } else {
                expanded.push('$');
                rest = &after[1..];
            }
        }
        expanded.push_str(rest);
    }
    if problems.is_empty() {
        Ok(expanded)
    } else {
        Err(problems)
    }
}

fn problem(line_index: usize, column: usize, message: &str) -> ConfigProblem {
    ConfigProblem {
        source: String::new(),
        position: Some((line_index + 1, column)),
        key: String::new(),
        message: message.to_owned(),
    }
}

fn push_escaped(out: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            control if control.is_control() => out.push_str(&format!("\\u{:04X}", control as u32)),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3\"cr\\et".to_owned()),
            "PORT" => Some("8001".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn references_are_replaced_and_escaped_for_toml_strings() {
        let text = "key = \"${SECRET}\"\nurl = \"http://h:${PORT}\"\n";
        let expanded = expand(text, lookup).expect("all variables set");
        let table: toml::Table = toml::from_str(&expanded).expect("still valid TOML");
        assert_eq!(table["key"].as_str(), Some("s3\"cr\\et"));
        assert_eq!(table["url"].as_str(), Some("http://h:8001"));
    }

    #[test]
    fn every_unset_variable_is_reported_with_its_position() {
        let problems = expand("a = \"${MISSING}\"\nb = \"${ALSO_MISSING}\"\n", lookup).expect_err("unset");
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].position, Some((1, 6)));
        assert!(problems[1].message.contains("ALSO_MISSING is not set"));
    }

    #[test]
    fn defaults_apply_when_a_variable_is_unset() {
        let expanded = expand("a = \"${MISSING:-fallback}\"\nb = \"${PORT:-1}\"", lookup).expect("defaults");
        assert_eq!(expanded, "a = \"fallback\"\nb = \"8001\"");
    }

    #[test]
    fn dollar_signs_without_braces_and_escaped_references_stay_literal() {
        let expanded = expand("a = \"$5 and $${NOT}\"", lookup).expect("nothing to expand");
        assert_eq!(expanded, "a = \"$5 and ${NOT}\"");
    }
}
