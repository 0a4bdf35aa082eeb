//! What the cache holds: keys, stored answers with their lifetimes, and
//! the byte encoding used for the shared Redis tier.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::rules::Lifetimes;
use crate::client::Caller;
use crate::identity::Identity;

/// Separates the fields of a key; no path, host or header value holds it.
const SEPARATOR: char = '\u{1f}';

/// Fixed overhead counted per entry besides its key, headers and body.
const ENTRY_OVERHEAD: usize = 256;

/// A cache key: the kind of answer, the service and its path (first, so
/// purges by service and path can match keys by pattern in Redis), the
/// gateway path, the host, the caller's partition and the `Vary` values.
pub type CacheKey = Arc<str>;

/// Whose answers a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Partition {
    /// Everyone's.
    Public,
    /// One verified caller's, or all anonymous callers'.
    Caller(String),
}

impl Partition {
    /// The partition of `identity` (`None`: anonymous). Both the subject or
    /// client name and everything the backend is told about the caller go
    /// in, so two callers share a partition only if the backend cannot tell
    /// them apart.
    pub fn of(identity: Option<&Identity>) -> Self {
        let Some(identity) = identity else { return Self::Caller("anonymous".to_owned()) };
        let mut name = Caller::verified(identity).map_or_else(|| "unnamed".to_owned(), |caller| caller.to_string());
        for (header, value) in &identity.forwarded_headers {
            name.push('\u{1e}');
            name.push_str(header.as_str());
            name.push('=');
            name.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        Self::Caller(name)
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Public => "public",
            Self::Caller(name) => name,
        }
    }

    pub fn is_public(&self) -> bool {
        matches!(self, Self::Public)
    }
}

/// Where an answer came from, for keys and purges.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `r` for REST passthrough answers, `g` for GraphQL field calls.
    pub kind: char,
    pub service: Arc<str>,
    /// The service's path and query.
    pub service_target: String,
    /// The gateway's path and query (REST only).
    pub gateway_target: String,
    /// The request's host (REST), or the headers a GraphQL connector adds.
    pub host: String,
    pub partition: Partition,
}

impl Origin {
    /// The key of the answer, before any `Vary` values.
    pub fn key(&self) -> CacheKey {
        let s = SEPARATOR;
        Arc::from(format!(
            "{}{s}{}{s}{}{s}{}{s}{}{s}{}",
            self.kind,
            self.service,
            self.service_target,
            self.gateway_target,
            self.host,
            self.partition.as_str()
        ))
    }

    pub fn service_path(&self) -> &str {
        self.service_target.split('?').next().unwrap_or_default()
    }

    pub fn gateway_path(&self) -> &str {
        self.gateway_target.split('?').next().unwrap_or_default()
    }
}

/// The key of one variant: `base` plus the request's values of `names`.
pub(crate) fn variant_key(base: &str, names: &[HeaderName], request: &HeaderMap) -> CacheKey {
    let mut key = String::from(base);
    for name in names {
        key.push(SEPARATOR);
        key.push_str(name.as_str());
        for value in request.get_all(name) {
            key.push('=');
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    Arc::from(key)
}

/// One stored value.
#[derive(Debug)]
pub(crate) struct Stored {
    pub service: Arc<str>,
    /// The service's path (no query), for purges by service path.
    pub service_path: Box<str>,
    /// The gateway's path (no query), for purges by gateway prefix and for
    /// invalidation after unsafe requests.
    pub gateway_path: Box<str>,
    pub content: Content,
    /// Set while one background request refreshes a stale answer.
    refreshing: AtomicBool,
}

/// An answer, or the index telling which request headers pick a variant.
#[derive(Debug)]
pub(crate) enum Content {
    Answer(Answer),
    /// Answers under this key vary on these request headers; each lives
    /// under [`variant_key`]. Kept as long as the answer that set it.
    Variants {
        names: Box<[HeaderName]>,
        retain_for: Duration,
    },
}

/// A stored answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: SystemTime,
    pub lifetimes: Lifetimes,
}

/// How usable a stored answer is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Expired, within `stale_while_revalidate`.
    StaleRevalidate,
    /// Expired, usable only when the backend fails (`stale_if_error`).
    StaleIfError,
    Expired,
}

impl Answer {
    /// The answer's age (RFC 9111 4.2.3, with the gateway's receipt as the
    /// request and response time).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.lifetimes.initial_age + now.duration_since(self.received_at).unwrap_or(Duration::ZERO)
    }

    pub fn freshness(&self, now: SystemTime) -> Freshness {
        let age = self.age(now);
        let lifetimes = &self.lifetimes;
        if age < lifetimes.fresh_for {
            Freshness::Fresh
        } else if age < lifetimes.fresh_for + lifetimes.stale_while_revalidate {
            Freshness::StaleRevalidate
        } else if age < lifetimes.fresh_for + lifetimes.stale_if_error {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// How long the entry stays in the cache from now: fresh, then as long
    /// as either stale window can still use it.
    pub fn retain_for(&self, now: SystemTime) -> Duration {
        let lifetimes = &self.lifetimes;
        let usable = lifetimes.fresh_for + lifetimes.stale_while_revalidate.max(lifetimes.stale_if_error);
        usable.saturating_sub(self.age(now))
    }
}

impl Stored {
    pub fn new(origin: &Origin, content: Content) -> Self {
        Self {
            service: Arc::clone(&origin.service),
            service_path: Box::from(origin.service_path()),
            gateway_path: Box::from(origin.gateway_path()),
            content,
            refreshing: AtomicBool::new(false),
        }
    }

    pub fn answer(&self) -> Option<&Answer> {
        match &self.content {
            Content::Answer(answer) => Some(answer),
            Content::Variants { .. } => None,
        }
    }

    /// Claims the one background refresh of this entry; `false` when one
    /// is already running.
    pub fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Lets a later request refresh the entry again (after a failure).
    pub fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    pub fn retain_for(&self, now: SystemTime) -> Duration {
        match &self.content {
            Content::Answer(answer) => answer.retain_for(now),
            Content::Variants { retain_for, .. } => *retain_for,
        }
    }

    /// Bytes the entry costs: key, body, headers and a fixed overhead.
    pub fn weight(&self, key: &str) -> u32 {
        let content = match &self.content {
            Content::Answer(answer) => {
                answer.body.len()
                    + answer.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum::<usize>()
            }
            Content::Variants { names, .. } => names.iter().map(|name| name.as_str().len()).sum(),
        };
        let total = key.len() + self.service_path.len() + self.gateway_path.len() + content + ENTRY_OVERHEAD;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// The entry for the shared tier; only answers are shared.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let answer = self.answer()?;
        let mut out = Vec::with_capacity(answer.body.len() + 512);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&answer.status.as_u16().to_be_bytes());
        let received_ms = answer.received_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        put_u64(&mut out, u64::try_from(received_ms).unwrap_or(u64::MAX));
        let lifetimes = &answer.lifetimes;
        for duration in
            [lifetimes.fresh_for, lifetimes.initial_age, lifetimes.stale_while_revalidate, lifetimes.stale_if_error]
        {
            put_u64(&mut out, u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        }
        put_bytes(&mut out, self.service.as_bytes());
        put_bytes(&mut out, self.service_path.as_bytes());
        put_bytes(&mut out, self.gateway_path.as_bytes());
        put_u64(&mut out, answer.headers.len() as u64);
        for (name, value) in &answer.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &answer.body);
        Some(out)
    }

    /// Reads an entry written by [`Stored::encode`]; `None` for anything
    /// else (another version, a truncated value).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader(bytes.strip_prefix(MAGIC)?);
        let status = StatusCode::from_u16(u16::from_be_bytes(reader.take(2)?.try_into().ok()?)).ok()?;
        let received_at = UNIX_EPOCH + Duration::from_millis(reader.u64()?);
        let mut durations = [Duration::ZERO; 4];
        for duration in &mut durations {
            *duration = Duration::from_millis(reader.u64()?);
        }
        let [fresh_for, initial_age, stale_while_revalidate, stale_if_error] = durations;
        let service: Arc<str> = Arc::from(std::str::from_utf8(reader.bytes()?).ok()?);
        let service_path = Box::from(std::str::from_utf8(reader.bytes()?).ok()?);
        let gateway_path = Box::from(std::str::from_utf8(reader.bytes()?).ok()?);
        let count = reader.u64()?;
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = HeaderName::from_bytes(reader.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(reader.bytes()?).ok()?;
            headers.append(name, value);
        }
        let body = Bytes::copy_from_slice(reader.bytes()?);
        let lifetimes = Lifetimes { fresh_for, initial_age, stale_while_revalidate, stale_if_error };
        Some(Self {
            service,
            service_path,
            gateway_path,
            content: Content::Answer(Answer { status, headers, body, received_at, lifetimes }),
            refreshing: AtomicBool::new(false),
        })
    }
}

const MAGIC: &[u8] = b"portico-cache-1\n";

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.u64()?).ok()?;
        self.take(length)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn identity(subject: Option<&str>, client: Option<&str>) -> Identity {
        Identity {
            subject: subject.map(str::to_owned),
            client: client.map(str::to_owned),
            scopes: BTreeSet::new(),
            claims: Arc::new(serde_json::Value::Null),
            forwarded_headers: Vec::new(),
        }
    }

    #[test]
    fn callers_never_share_a_partition() {
        let alice = Partition::of(Some(&identity(Some("alice"), None)));
        let bob = Partition::of(Some(&identity(Some("bob"), None)));
        let key_named_alice = Partition::of(Some(&identity(None, Some("alice"))));
        let anonymous = Partition::of(None);
        let all = [&alice, &bob, &key_named_alice, &anonymous, &Partition::Public];
        for (index, one) in all.iter().enumerate() {
            for other in &all[index + 1..] {
                assert_ne!(one, other);
            }
        }
    }

    #[test]
    fn variant_keys_tell_absent_from_empty_values() {
        let names = [HeaderName::from_static("accept-language")];
        let mut english = HeaderMap::new();
        english.insert("accept-language", HeaderValue::from_static("en"));
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", HeaderValue::from_static(""));
        let keys: BTreeSet<CacheKey> =
            [&english, &empty, &HeaderMap::new()].iter().map(|headers| variant_key("k", &names, headers)).collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn answers_survive_the_shared_encoding() {
        let origin = Origin {
            kind: 'r',
            service: Arc::from("live_reading"),
            service_target: "/lesson/1/?x=1".to_owned(),
            gateway_target: "/live-reading/lesson/1/?x=1".to_owned(),
            host: "gateway.test".to_owned(),
            partition: Partition::Public,
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let lifetimes = Lifetimes {
            fresh_for: Duration::from_secs(30),
            initial_age: Duration::from_secs(2),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
        };
        let received_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let answer =
            Answer { status: StatusCode::OK, headers, body: Bytes::from_static(b"{}"), received_at, lifetimes };
        let stored = Stored::new(&origin, Content::Answer(answer));
        let encoded = stored.encode().expect("answers encode");
        let decoded = Stored::decode(&encoded).expect("decodes");
        let answer = decoded.answer().expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, Bytes::from_static(b"{}"));
        assert_eq!(answer.received_at, received_at);
        assert_eq!(answer.lifetimes, lifetimes);
        assert_eq!(answer.headers.get_all("x-multi").iter().count(), 2);
        assert_eq!((&*decoded.service, &*decoded.service_path), ("live_reading", "/lesson/1/"));
        assert_eq!(&*decoded.gateway_path, "/live-reading/lesson/1/");
        assert!(Stored::decode(&encoded[..encoded.len() - 1]).is_none(), "truncated values are refused");
    }
}
