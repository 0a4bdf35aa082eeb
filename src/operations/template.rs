//! Path templates such as `/bff/dashboard/{id}`: literal segments and
//! whole-segment parameters, matched segment by segment (linear in the
//! path) against the canonical path.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches itself.
    Literal(String),
    /// Matches any non-empty segment, whose decoded text is the parameter.
    Parameter(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments between slashes (a trailing slash is an empty literal).
    pub segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses `path`; the error says what is wrong and how to write it.
    pub fn parse(path: &str) -> Result<Self, String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!("{path:?} must start with '/', e.g. \"/bff/dashboard/{{id}}\""));
        };
        if path.contains(['?', '#', '%', '*']) {
            return Err(format!("{path:?} must be a plain path: no query, fragment, escapes or wildcards"));
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let last = rest.split('/').count() - 1;
        for (index, segment) in rest.split('/').enumerate() {
            if segment.is_empty() && index != last {
                return Err(format!("{path:?} has an empty segment"));
            }
            if segment == "." || segment == ".." {
                return Err(format!("{path:?} has a {segment:?} segment"));
            }
            match segment.strip_prefix('{').and_then(|inner| inner.strip_suffix('}')) {
                Some(name) => {
                    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(format!("{{{name}}} in {path:?} is no GraphQL variable name (letters, digits, _)"));
                    }
                    if names.contains(&name) {
                        return Err(format!("{{{name}}} appears twice in {path:?}"));
                    }
                    names.push(name);
                    segments.push(Segment::Parameter(name.to_owned()));
                }
                None if segment.contains(['{', '}']) => {
                    return Err(format!("{path:?}: a parameter is a whole segment, such as /{{id}}"));
                }
                None => segments.push(Segment::Literal(segment.to_owned())),
            }
        }
        Ok(Self { segments })
    }

    /// The template with parameter names erased: two templates of one shape
    /// match the same paths.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Parameter(_) => "{}",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The raw (still percent-encoded) text of each parameter, by name, if
    /// `path` matches.
    pub fn capture<'t, 'p>(&'t self, path: &'p str) -> Option<Vec<(&'t str, &'p str)>> {
        let mut captured = Vec::new();
        self.walk(path, |name, value| captured.push((name, value))).then_some(captured)
    }

    /// Whether `path` matches, without collecting its parameters: the
    /// route lookup asks this of every request.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// Matches `path` segment by segment, handing each parameter's value to
    /// `parameter`; false at the first segment that does not fit.
    fn walk<'t, 'p>(&'t self, path: &'p str, mut parameter: impl FnMut(&'t str, &'p str)) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else { return false };
            match segment {
                Segment::Literal(text) if text == part => {}
                Segment::Literal(_) => return false,
                Segment::Parameter(_) if part.is_empty() => return false,
                Segment::Parameter(name) => parameter(name.as_str(), part),
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_and_capture_parameters() {
        let template = PathTemplate::parse("/bff/dashboard/{id}").expect("valid");
        assert_eq!(template.capture("/bff/dashboard/42"), Some(vec![("id", "42")]));
        assert_eq!(template.capture("/bff/dashboard/"), None);
        assert_eq!(template.capture("/bff/dashboard/42/x"), None);
        assert_eq!(template.capture("/bff/dashboards/42"), None);
        assert!(template.matches("/bff/dashboard/42") && !template.matches("/bff/dashboard/42/x"));
        let slashed = PathTemplate::parse("/a/{x}/").expect("valid");
        assert_eq!(slashed.capture("/a/1/"), Some(vec![("x", "1")]));
        assert_eq!(slashed.capture("/a/1"), None);
        assert_eq!(template.shape(), "bff/dashboard/{}");
    }

    #[test]
    fn malformed_templates_say_why() {
        for (path, says) in [
            ("bff", "start with '/'"),
            ("/a/{id", "whole segment"),
            ("/a/x{id}", "whole segment"),
            ("/a/{1d}", "variable name"),
            ("/a/{id}/{id}", "twice"),
            ("/a//b", "empty segment"),
            ("/a/?q", "plain path"),
        ] {
            let error = PathTemplate::parse(path).expect_err(path);
            assert!(error.contains(says), "{path}: {error}");
        }
    }
}
