//! W3C Trace Context: a request's trace is taken from a trusted caller's
//! `traceparent` / `tracestate` or started here, written into the request's
//! log span, and handed on to every backend call with a new parent id.
//!
//! The gateway's spans are ordinary `tracing` spans (`request`,
//! `graphql.field`, `backend.call`). When the OTLP exporter is installed,
//! `tracing-opentelemetry` turns them into OpenTelemetry spans and the ids
//! sent to backends are those spans' ids; without it the ids are made here,
//! so propagation works the same with or without export.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One request's place in a distributed trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    flags: u8,
    tracestate: Option<HeaderValue>,
}

/// A caller's `traceparent`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
    tracestate: Option<HeaderValue>,
}

impl RemoteParent {
    /// Reads `traceparent` (and `tracestate`) from a caller's headers;
    /// `None` when absent or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let (trace_id, parent_id, flags) = parse_traceparent(headers.get(TRACEPARENT)?.as_bytes())?;
        // Several tracestate headers are one list; the first is enough to
        // carry vendors' state forward without rebuilding it.
        let tracestate = headers.get(TRACESTATE).filter(|value| !value.is_empty()).cloned();
        Some(Self { trace_id, parent_id, flags, tracestate })
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    fn otel_context(&self) -> opentelemetry::Context {
        let state = self
            .tracestate
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .and_then(|text| TraceState::from_str(text).ok())
            .unwrap_or_default();
        let span_context = SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.parent_id.to_be_bytes()),
            TraceFlags::new(self.flags),
            true,
            state,
        );
        opentelemetry::Context::new().with_remote_span_context(span_context)
    }
}

impl TraceContext {
    /// Joins `span` to the caller's trace (or starts one) and returns the
    /// request's trace context. With the OTLP exporter installed, the span's
    /// own OpenTelemetry context decides the ids (and sampling).
    pub fn start(span: &tracing::Span, remote: Option<RemoteParent>) -> Self {
        if let Some(remote) = &remote {
            // Fails harmlessly when the span is disabled or nothing exports.
            let _ = span.set_parent(remote.otel_context());
        }
        let tracestate = remote.as_ref().and_then(|remote| remote.tracestate.clone());
        let exported = span.context().span().span_context().clone();
        if exported.is_valid() {
            return Self {
                trace_id: u128::from_be_bytes(exported.trace_id().to_bytes()),
                flags: exported.trace_flags().to_u8(),
                tracestate,
            };
        }
        match remote {
            Some(remote) => Self { trace_id: remote.trace_id, flags: remote.flags, tracestate },
            // Nothing is recorded here, so the sampled flag stays off.
            None => Self { trace_id: random_nonzero_u128(), flags: 0, tracestate: None },
        }
    }

    /// The trace id, for logs and tests.
    pub fn trace_id(&self) -> TraceIdHex {
        TraceIdHex(self.trace_id)
    }

    /// Sets `traceparent` (and `tracestate`) on a backend request made
    /// within `span`: the trace id stays, the parent id is `span`'s when
    /// it is exported, else a fresh id for this call.
    pub fn inject(&self, headers: &mut HeaderMap, span: &tracing::Span) {
        // A span no subscriber records (no exporter) has no context to ask.
        let exported = if span.is_disabled() {
            SpanContext::empty_context()
        } else {
            span.context().span().span_context().clone()
        };
        let (trace_id, span_id, flags) =
            if exported.is_valid() && u128::from_be_bytes(exported.trace_id().to_bytes()) == self.trace_id {
                (self.trace_id, u64::from_be_bytes(exported.span_id().to_bytes()), exported.trace_flags().to_u8())
            } else {
                (self.trace_id, random_nonzero_u64(), self.flags)
            };
        // Lowercase hex and dashes are always a valid header value.
        if let Ok(value) = HeaderValue::from_bytes(&traceparent(trace_id, span_id, flags)) {
            headers.insert(TRACEPARENT, value);
        }
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => crate::request::remove_headers(headers, std::slice::from_ref(&TRACESTATE)),
        }
    }
}

/// A trace id written as 32 lowercase hex digits, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIdHex(u128);

impl fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Writes a version-00 `traceparent` (`00-<trace id>-<parent id>-<flags>`),
/// without the formatting machinery, once per backend call.
fn traceparent(trace_id: u128, span_id: u64, flags: u8) -> [u8; 55] {
    fn hex(out: &mut [u8], value: u128) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut value = value;
        for digit in out.iter_mut().rev() {
            *digit = DIGITS[(value & 0xf) as usize];
            value >>= 4;
        }
    }
    let mut value = [b'-'; 55];
    value[..2].copy_from_slice(b"00");
    hex(&mut value[3..35], trace_id);
    hex(&mut value[36..52], u128::from(span_id));
    hex(&mut value[53..55], u128::from(flags));
    value
}

/// Parses a W3C `traceparent`: `version-traceid-parentid-flags`. Version
/// `ff` and all-zero ids are invalid; later versions may append fields.
pub fn parse_traceparent(value: &[u8]) -> Option<(u128, u64, u8)> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = hex_field(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_field(&value[3..35])?;
    let parent_id = u64::try_from(hex_field(&value[36..52])?).ok()?;
    let flags = u8::try_from(hex_field(&value[53..55])?).ok()?;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

/// Lowercase hex only, as the specification requires.
fn hex_field(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0_u128, |value, digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((value << 4) | u128::from(nibble))
    })
}

fn random_nonzero_u128() -> u128 {
    loop {
        let value = fastrand::u128(..);
        if value != 0 {
            return value;
        }
    }
}

fn random_nonzero_u64() -> u64 {
    loop {
        let value = fastrand::u64(..);
        if value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let (trace_id, parent_id, flags) = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(format!("{trace_id:032x}"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(flags, 1);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(parse_traceparent(format!("01{}-future", &VALID[2..]).as_bytes()).is_some());
    }

    #[test]
    fn written_traceparents_are_the_formatted_ones_and_parse_back() {
        for (trace_id, span_id, flags) in [(1, 1, 0), (u128::MAX, u64::MAX, 0xff), (0x4bf9_2f35 << 64, 0x00f0_67aa, 1)]
        {
            let value = traceparent(trace_id, span_id, flags);
            assert_eq!(value.as_slice(), format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}").as_bytes());
            assert_eq!(parse_traceparent(&value), Some((trace_id, span_id, flags)));
        }
    }

    #[test]
    fn injection_keeps_the_trace_and_makes_a_new_parent() {
        let mut incoming = HeaderMap::new();
        incoming.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        incoming.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let remote = RemoteParent::from_headers(&incoming).expect("valid");
        let trace = TraceContext::start(&tracing::Span::none(), Some(remote));
        assert_eq!(trace.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut outgoing = HeaderMap::new();
        trace.inject(&mut outgoing, &tracing::Span::none());
        let sent = outgoing[TRACEPARENT].to_str().expect("ascii");
        let (trace_id, parent_id, flags) = parse_traceparent(sent.as_bytes()).expect("valid");
        assert_eq!(format!("{trace_id:032x}"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parent_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(flags, 1);
        assert_eq!(outgoing[TRACESTATE], "vendor=1");
    }
}
