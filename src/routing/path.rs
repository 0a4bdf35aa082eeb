//! Safe path normalisation.
//!
//! Every decision by path is made on the normalised path, so no spelling of
//! a path (`..`, `%2e%2e`, `%2f`, doubled slashes, backslashes) can match one
//! route or policy and then reach another part of a backend. Dot segments
//! are refused rather than resolved: no browser or HTTP client sends them
//! (both resolve them before sending, RFC 3986 5.2.4), so a request target
//! that carries one was written by hand to probe the gateway, and resolving
//! it would let `/student-api/../payment/` reach a route it does not name.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (for example `*` or an empty path).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("the request path contains a '.' or '..' segment")]
    DotSegment,
    /// A segment hides a separator or a NUL byte in percent-encoding, or
    /// contains a backslash, which some backends treat as a separator.
    #[error("the request path contains an encoded separator, a backslash or a NUL byte")]
    HiddenSeparator,
}

/// Refuses `.` and `..` segments (also when percent-encoded, in any case)
/// and merges repeated slashes; other segments keep their original encoding.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let suspicious = path.contains("/.") || path.contains("//") || path.contains(['%', '\\']);
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }

    let mut segments: Vec<&str> = Vec::new();
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
            b"." | b".." => return Err(PathError::DotSegment),
            _ => segments.push(segment),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if path.ends_with('/') || segments.is_empty() {
        normalized.push('/');
    }
    if normalized == path {
        return Ok(Cow::Borrowed(path));
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
    fn repeated_slashes_merge() {
        assert_eq!(normalize("/a//b///c/").as_deref(), Ok("/a/b/c/"));
        assert_eq!(normalize("//").as_deref(), Ok("/"));
        assert_eq!(normalize("/a%20b//c").as_deref(), Ok("/a%20b/c"));
    }

    #[test]
    fn dot_segments_are_refused_plain_and_encoded() {
        for path in [
            "/student-api/../payment/x",
            "/student-api/%2e%2e/payment/x",
            "/student-api/.%2e/payment/x",
            "/student-api/%2E./payment/",
            "/student-api/echo/../../payment/x",
            "/a/./b",
            "/a/%2E/b",
            "/a/b/.",
            "/a/b/..",
            "/..",
            "/../etc/passwd",
        ] {
            assert_eq!(normalize(path), Err(PathError::DotSegment), "{path}");
        }
        // Dots inside a segment are ordinary characters.
        for path in ["/a.b/c.json", "/.well-known/x", "/a/...", "/a/%2e%2e%2e/", "/a/..b"] {
            assert_eq!(normalize(path).as_deref(), Ok(path), "{path}");
        }
    }

    #[test]
    fn hidden_separators_are_refused() {
        assert_eq!(normalize("/student-api/..%2fpayment/"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/student-api/%2F..%2Fpayment/"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a\\..\\b"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a%5c..%5cb"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("/a%00b"), Err(PathError::HiddenSeparator));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }
}
