//! Safe path normalisation.
//!
//! Every decision by path is made on the normalised path, so no spelling of
//! a path (`..`, `%2e%2e`, `%2f`, doubled slashes, backslashes) can match one
//! route or policy and then reach another part of a backend.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (for example `*` or an empty path).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// `..` segments climb above the root.
    #[error("the request path climbs above the root with '..'")]
    EscapesRoot,
    /// A segment hides a separator or a NUL byte in percent-encoding, or
    /// contains a backslash, which some backends treat as a separator.
    #[error("the request path contains an encoded separator, a backslash or a NUL byte")]
    HiddenSeparator,
}

/// Resolves `.` and `..` segments (also when percent-encoded) and merges
/// repeated slashes; other segments keep their original encoding.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let suspicious = path.contains("/.") || path.contains("//") || path.contains(['%', '\\']);
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }

    let mut segments: Vec<&str> = Vec::new();
    let ends_in_directory = path.ends_with('/');
    let mut trailing_slash = ends_in_directory;
    for segment in path[1..].split('/') {
        if segment.contains('\\') {
            return Err(PathError::HiddenSeparator);
        }
        let decoded: Cow<'_, [u8]> =
            if segment.contains('%') { percent_decode_str(segment).into() } else { Cow::Borrowed(segment.as_bytes()) };
        if decoded.iter().any(|&byte| matches!(byte, b'/' | b'\\' | 0)) {
            return Err(PathError::HiddenSeparator);
        }
        match &*decoded {
            b"" => {}
            b"." => trailing_slash = true,
            b".." => {
                segments.pop().ok_or(PathError::EscapesRoot)?;
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = ends_in_directory;
            }
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_untouched() {
        for path in ["/", "/payment/checkout/", "/users/1/", "/a%20b/c", "/a.b/c.json"] {
            assert_eq!(normalize(path).as_deref(), Ok(path));
        }
    }

    #[test]
    fn dot_segments_resolve_plain_and_encoded() {
        assert_eq!(normalize("/student-api/../payment/x").as_deref(), Ok("/payment/x"));
        assert_eq!(normalize("/student-api/%2e%2e/payment/x").as_deref(), Ok("/payment/x"));
        assert_eq!(normalize("/student-api/%2E./payment/").as_deref(), Ok("/payment/"));
        assert_eq!(normalize("/a/./b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(normalize("/a//b///c/").as_deref(), Ok("/a/b/c/"));
        assert_eq!(normalize("/a/b/..").as_deref(), Ok("/a/"));
    }

    #[test]
    fn escapes_and_hidden_separators_are_refused() {
        assert_eq!(normalize("/../etc/passwd"), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/a/%2e%2e/%2e%2e/b"), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/student-api/..%2fpayment/"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/student-api/%2F..%2Fpayment/"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a\\..\\b"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a%5c..%5cb"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a%00b"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }
}
