//! Backend answers read by shape: a plan knows, for every backend call,
//! which keys of the answer any selected field (or a child call's
//! `$parent.x`) reads, so the answer is parsed into a [`Node`] tree holding
//! only those keys. Everything else is skipped (and checked) by the reader
//! without being built. Scalars are not converted at all: a string or a
//! number is its text's place in the answer ([`Raw`]), and the response
//! writer copies that text, escapes and digits as the backend wrote them,
//! once it has checked that the value fits the field's type. The reader is
//! our own rather than serde's, because what it must produce is not a
//! value but a place, and it accepts exactly the JSON serde_json accepts.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value as Json;

/// What to keep of one JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A scalar (string, number, boolean); anything else is kept whole, so
    /// that the writer can report the mismatch.
    Scalar,
    /// The whole value, as JSON (custom scalars such as `JSON`).
    Any,
    /// A list of values of one shape.
    List(Box<Shape>),
    /// An object of which only some keys are read.
    Object(Arc<ObjectShape>),
}

/// The keys read of an object, each in its slot, plus slots for the calls
/// the object's selected `@rest` fields make (filled in by the executor).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectShape {
    /// Slot `i` holds the value of `keys[i].0`.
    pub keys: Vec<(Box<str>, Shape)>,
    /// Slots after the keys, one per `@rest` child.
    pub call_slots: usize,
}

impl ObjectShape {
    /// Slots an object of this shape has.
    pub fn slots(&self) -> usize {
        self.keys.len() + self.call_slots
    }

    fn slot_of(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|(name, _)| &**name == key)
    }
}

/// A shape being built while a plan is compiled: every reader adds what it
/// needs, and readers of the same key share its slot.
#[derive(Debug, Default)]
pub struct ShapeBuilder {
    keys: Vec<(Box<str>, Need)>,
    call_slots: usize,
}

/// What the readers of one key need.
#[derive(Debug)]
pub enum Need {
    /// A scalar.
    Scalar,
    /// The whole value.
    Any,
    /// A list of this.
    List(Box<Need>),
    /// An object read key by key.
    Object(ShapeBuilder),
}

impl Need {
    /// Combines two readers' needs: structure wins over a scalar (a scalar
    /// reader of an object reports the mismatch anyway), and a reader of
    /// the whole value gets it whole.
    fn merge(&mut self, other: Need) {
        match (&mut *self, other) {
            (Need::Any, _) => {}
            (_, Need::Any) => *self = Need::Any,
            (Need::Object(mine), Need::Object(theirs)) => mine.absorb(theirs),
            (Need::List(mine), Need::List(theirs)) => mine.merge(*theirs),
            (Need::Scalar, other) => *self = other,
            (_, Need::Scalar) => {}
            // An object and a list for one key: nobody can be right.
            (_, _) => *self = Need::Any,
        }
    }

    fn build(self) -> Shape {
        match self {
            Need::Scalar => Shape::Scalar,
            Need::Any => Shape::Any,
            Need::List(inner) => Shape::List(Box::new(inner.build())),
            Need::Object(builder) => Shape::Object(Arc::new(builder.build())),
        }
    }
}

impl ShapeBuilder {
    /// The slot of `key`, adding `need` to what it holds.
    pub fn require(&mut self, key: &str, need: Need) -> usize {
        match self.keys.iter().position(|(name, _)| &**name == key) {
            Some(slot) => {
                self.keys[slot].1.merge(need);
                slot
            }
            None => {
                self.keys.push((key.into(), need));
                self.keys.len() - 1
            }
        }
    }

    /// The builder of the object (or of the objects of the list, through
    /// `lists` levels) at `slot`.
    pub fn object_at(&mut self, slot: usize, lists: usize) -> &mut ShapeBuilder {
        let mut need = &mut self.keys[slot].1;
        for _ in 0..lists {
            if !matches!(need, Need::List(_)) {
                *need = Need::List(Box::new(Need::Object(ShapeBuilder::default())));
            }
            let Need::List(inner) = need else { unreachable!("made a list above") };
            need = inner;
        }
        if !matches!(need, Need::Object(_)) {
            *need = Need::Object(ShapeBuilder::default());
        }
        match need {
            Need::Object(builder) => builder,
            _ => unreachable!("made an object above"),
        }
    }

    /// A new slot for a child call; slots of calls come after all keys, so
    /// the index is final only in [`ShapeBuilder::build`]: this returns the
    /// call's ordinal.
    pub fn add_call(&mut self) -> usize {
        self.call_slots += 1;
        self.call_slots - 1
    }

    fn absorb(&mut self, other: ShapeBuilder) {
        for (key, need) in other.keys {
            self.require(&key, need);
        }
        self.call_slots += other.call_slots;
    }

    /// The finished shape.
    pub fn build(self) -> ObjectShape {
        ObjectShape {
            keys: self.keys.into_iter().map(|(key, need)| (key, need.build())).collect(),
            call_slots: self.call_slots,
        }
    }

    /// Keys so far (call slots are numbered after them).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// A backend value, as far as the plan reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Node {
    /// `null`, or a key the answer does not have.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A negative integer (of a value read whole).
    Int(i64),
    /// A non-negative integer (of a value read whole).
    UInt(u64),
    /// Any other number (of a value read whole).
    Float(f64),
    /// A number of an answer, as its text.
    Number(Raw),
    /// A string of an answer, as its text between the quotes.
    Str(Raw),
    /// A string of a value read whole.
    Text(Box<str>),
    /// A list.
    List(Box<[Node]>),
    /// An object, slot by slot of its [`ObjectShape`].
    Object(Box<[Node]>),
    /// A whole value ([`Shape::Any`], or a value of another shape than the
    /// plan expects).
    Json(Box<Json>),
    /// The result of the call with this id (see `execute`).
    Call(u32),
    /// The answer for one key of the batched call with this id.
    Keyed {
        /// The batch's call id.
        call: u32,
        /// The index of the parent's key among the batch's keys.
        key: u32,
    },
}

impl Node {
    /// A JSON value for `$parent.x` expressions and batch keys; `bodies`
    /// hold the text of [`Raw`] scalars.
    pub fn to_json(&self, bodies: &Bodies) -> Json {
        match self {
            Node::Null | Node::Object(_) | Node::Call(_) | Node::Keyed { .. } => Json::Null,
            Node::Bool(flag) => Json::Bool(*flag),
            Node::Int(number) => Json::from(*number),
            Node::UInt(number) => Json::from(*number),
            Node::Float(number) => serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number),
            Node::Number(raw) => bodies.number(*raw),
            Node::Str(raw) => Json::String(bodies.string(*raw).into_owned()),
            Node::Text(text) => Json::String(text.to_string()),
            Node::List(items) => Json::Array(items.iter().map(|item| item.to_json(bodies)).collect()),
            Node::Json(json) => (**json).clone(),
        }
    }

    /// Converts a whole JSON value to a node of `shape` (for answers read
    /// whole, such as cached ones in another form).
    pub fn from_json(json: Json, shape: &Shape) -> Node {
        match (json, shape) {
            (Json::Null, _) => Node::Null,
            (json, Shape::Any) => Node::Json(Box::new(json)),
            (Json::Bool(flag), _) => Node::Bool(flag),
            (Json::Number(number), _) => match (number.as_u64(), number.as_i64(), number.as_f64()) {
                (Some(value), _, _) => Node::UInt(value),
                (_, Some(value), _) => Node::Int(value),
                (_, _, Some(value)) => Node::Float(value),
                _ => Node::Null,
            },
            (Json::String(text), _) => Node::Text(text.into()),
            (Json::Array(items), Shape::List(inner)) => {
                Node::List(items.into_iter().map(|item| Node::from_json(item, inner)).collect())
            }
            (Json::Object(mut map), Shape::Object(object)) => {
                let mut slots = empty_slots(object.slots());
                for (slot, (key, shape)) in object.keys.iter().enumerate() {
                    if let Some(value) = map.remove(&**key) {
                        slots[slot] = Node::from_json(value, shape);
                    }
                }
                Node::Object(slots)
            }
            (json, _) => Node::Json(Box::new(json)),
        }
    }
}

/// `n` null slots. Not `vec![Node::Null; n]`, which clones a node per slot.
pub fn empty_slots(n: usize) -> Box<[Node]> {
    (0..n).map(|_| Node::Null).collect()
}

/// The answers an execution has read, in the order their text was first
/// kept: a [`Raw`] names its answer by index here, so that a node holds
/// no reference count of its own.
#[derive(Debug, Default)]
pub struct Bodies(Vec<Bytes>);

impl Bodies {
    /// Keeps `body`; its index, for [`parse`].
    pub fn add(&mut self, body: Bytes) -> u32 {
        self.0.push(body);
        u32::try_from(self.0.len() - 1).unwrap_or(u32::MAX)
    }

    /// The answer kept as `index`.
    pub fn body(&self, index: u32) -> &[u8] {
        self.0.get(index as usize).map(|body| &body[..]).unwrap_or_default()
    }

    /// The JSON text of `raw`: a number's digits, or a string's body
    /// between its quotes (escapes as the backend wrote them).
    pub fn text(&self, raw: Raw) -> &[u8] {
        let start = raw.start as usize;
        self.0.get(raw.body as usize).and_then(|body| body.get(start..start + raw.len as usize)).unwrap_or_default()
    }

    /// A string's value, unescaped only when it has escapes.
    pub fn string(&self, raw: Raw) -> Cow<'_, str> {
        let text = self.text(raw);
        if !raw.flag {
            // Checked to be UTF-8 when parsed.
            return String::from_utf8_lossy(text);
        }
        let start = raw.start as usize;
        let quoted = self
            .0
            .get(raw.body as usize)
            .and_then(|body| body.get(start.saturating_sub(1)..start + raw.len as usize + 1));
        // Checked to unescape when parsed.
        quoted.and_then(|quoted| serde_json::from_slice::<String>(quoted).ok()).map(Cow::Owned).unwrap_or_default()
    }

    /// A number's value as JSON.
    pub fn number(&self, raw: Raw) -> Json {
        let text = std::str::from_utf8(self.text(raw)).unwrap_or_default();
        if raw.flag {
            if let Ok(number) = text.parse::<u64>() {
                return Json::from(number);
            }
            if let Ok(number) = text.parse::<i64>() {
                return Json::from(number);
            }
        }
        text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Json::Null, Json::Number)
    }
}

/// A scalar's JSON text in one of the execution's [`Bodies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    /// The answer's index in [`Bodies`].
    pub body: u32,
    /// Where the text starts in the answer.
    pub start: u32,
    /// Its length in bytes.
    pub len: u32,
    /// For a string: whether it has escapes. For a number: whether it is an
    /// integer that fits 64 bits (`i64` or `u64`); others read as `f64`,
    /// as serde_json reads them.
    pub flag: bool,
}

/// A backend answer that is not JSON, and where that shows.
#[derive(Debug, thiserror::Error)]
#[error("malformed JSON at byte {0}")]
pub struct MalformedJson(pub usize);

/// Arrays and objects may nest fewer levels than this, as in serde_json
/// (whose values kept whole must parse too): 127 at most.
const MAX_DEPTH: usize = 128;

/// Parses the answer `body` (kept as `index` of the execution's
/// [`Bodies`]), keeping what `shape` reads.
pub fn parse(body: &[u8], index: u32, shape: &Shape) -> Result<Node, MalformedJson> {
    if body.len() > u32::MAX as usize {
        return Err(MalformedJson(0));
    }
    let mut reader = Reader { bytes: body, pos: 0, body: index, depth: 0 };
    reader.whitespace();
    let node = reader.value(shape)?;
    reader.whitespace();
    if reader.pos != body.len() {
        return Err(reader.error());
    }
    Ok(node)
}

/// Bytes that end the plain run of a string: the quote, a backslash, a
/// control character (not allowed in JSON strings) and any non-ASCII byte
/// (checked to be UTF-8 once the string ends).
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = byte < 0x20 || byte == b'"' as usize || byte == b'\\' as usize || byte >= 0x80;
        byte += 1;
    }
    table
};

/// The slot of each member, in answer order, of the last object read of a
/// list (`usize::MAX`: a key the shape does not read).
type KeyOrder = Vec<usize>;

/// A JSON reader that keeps, of each value, what its shape reads: scalars
/// as their text's place in the answer, objects as slots, and skips the
/// rest, checking it as strictly as serde_json would.
struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
    body: u32,
    depth: usize,
}

impl Reader<'_> {
    fn error(&self) -> MalformedJson {
        MalformedJson(self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn raw(&self, start: usize, end: usize, flag: bool) -> Raw {
        // Answers are at most u32::MAX bytes (checked in `parse`).
        Raw { body: self.body, start: start as u32, len: (end - start) as u32, flag }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), MalformedJson> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn value(&mut self, shape: &Shape) -> Result<Node, MalformedJson> {
        if matches!(shape, Shape::Any) {
            return self.whole();
        }
        match self.peek() {
            Some(b'"') => {
                let (start, end, escaped) = self.string(true)?;
                Ok(Node::Str(self.raw(start, end, escaped)))
            }
            Some(b'-' | b'0'..=b'9') => {
                let (start, end, integer) = self.number()?;
                Ok(Node::Number(self.raw(start, end, integer)))
            }
            Some(b't') => self.literal(b"true").map(|()| Node::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|()| Node::Bool(false)),
            Some(b'n') => self.literal(b"null").map(|()| Node::Null),
            Some(b'{') => match shape {
                Shape::Object(object) => self.object(object, None),
                _ => self.whole(),
            },
            Some(b'[') => match shape {
                Shape::List(inner) => self.list(inner),
                _ => self.whole(),
            },
            _ => Err(self.error()),
        }
    }

    /// A value kept whole, as JSON (null stays a null node).
    fn whole(&mut self) -> Result<Node, MalformedJson> {
        let start = self.pos;
        self.skip()?;
        let json: Json = serde_json::from_slice(&self.bytes[start..self.pos]).map_err(|_| MalformedJson(start))?;
        Ok(if json.is_null() { Node::Null } else { Node::Json(Box::new(json)) })
    }

    fn enter(&mut self) -> Result<(), MalformedJson> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(self.error());
        }
        self.pos += 1;
        self.whitespace();
        Ok(())
    }

    /// After an item: true if another follows (`,`), false at `close`.
    fn next_item(&mut self, close: u8) -> Result<bool, MalformedJson> {
        self.whitespace();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.whitespace();
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => Err(self.error()),
        }
    }

    fn list(&mut self, inner: &Shape) -> Result<Node, MalformedJson> {
        self.enter()?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Node::List(items.into_boxed_slice()));
        }
        // The objects of one list usually have their keys in one order:
        // each item tries the key its predecessor had at that place first.
        let mut order = KeyOrder::new();
        loop {
            let item = match inner {
                Shape::Object(object) if self.peek() == Some(b'{') => self.object(object, Some(&mut order))?,
                _ => self.value(inner)?,
            };
            items.push(item);
            if !self.next_item(b']')? {
                return Ok(Node::List(items.into_boxed_slice()));
            }
        }
    }

    /// An object; `order`, for an item of a list, holds the slot of each
    /// member of the list's previous object (see [`Reader::known_key`]) and
    /// is updated. Other objects have no hints, and allocate none.
    fn object(&mut self, object: &ObjectShape, mut order: Option<&mut KeyOrder>) -> Result<Node, MalformedJson> {
        self.enter()?;
        let mut slots = empty_slots(object.slots());
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Node::Object(slots));
        }
        let mut member = 0;
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error());
            }
            let hint = order.as_deref().and_then(|order| order.get(member).copied());
            let (slot, known) = match self.known_key(object, hint) {
                Some(slot) => (Some(slot), true),
                None => {
                    let (start, end, escaped) = self.string(false)?;
                    let bytes = self.bytes;
                    let key = &bytes[start..end];
                    let slot = if escaped {
                        let quoted = &bytes[start - 1..=end];
                        let key: String = serde_json::from_slice(quoted).map_err(|_| MalformedJson(start))?;
                        object.slot_of(&key)
                    } else {
                        object.keys.iter().position(|(name, _)| same_key(name.as_bytes(), key))
                    };
                    (slot, false)
                }
            };
            // Only slots `known_key` found are hints: their keys are plain.
            let seen = if known { slot.unwrap_or(usize::MAX) } else { usize::MAX };
            if let Some(order) = order.as_deref_mut() {
                match order.get_mut(member) {
                    Some(place) => *place = seen,
                    None => order.push(seen),
                }
            }
            member += 1;
            self.whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error());
            }
            self.pos += 1;
            self.whitespace();
            match slot {
                Some(slot) => slots[slot] = self.value(&object.keys[slot].1)?,
                None => self.skip()?,
            }
            if !self.next_item(b'}')? {
                return Ok(Node::Object(slots));
            }
        }
    }

    /// At a key's opening quote: the slot of the shape's key that the
    /// answer's key is, byte for byte, trying `hint` first, with the
    /// reader past its closing quote; `None` (the reader unmoved) when it
    /// is none of them or a shape key needs escapes (then the key is read
    /// as any string). A key that equals a key without quotes, backslashes,
    /// control or non-ASCII bytes and is followed by a quote is exactly
    /// that string, so it needs no further check. `hint` is a slot this
    /// function found before (in the list's previous object), so its key
    /// is known to be plain.
    fn known_key(&mut self, object: &ObjectShape, hint: Option<usize>) -> Option<usize> {
        let rest = self.bytes.get(self.pos + 1..)?;
        let spelled = |name: &[u8]| rest.get(name.len()) == Some(&b'"') && same_key(name, &rest[..name.len()]);
        let slot = match hint.and_then(|slot| object.keys.get(slot).map(|key| (slot, key))) {
            Some((slot, (name, _))) if spelled(name.as_bytes()) => slot,
            _ => object.keys.iter().position(|(name, _)| {
                let name = name.as_bytes();
                spelled(name) && !name.iter().any(|byte| STRING_STOP[*byte as usize])
            })?,
        };
        self.pos += object.keys[slot].0.len() + 2;
        Some(slot)
    }

    /// Skips one value, checking it.
    fn skip(&mut self) -> Result<(), MalformedJson> {
        match self.peek() {
            Some(b'"') => self.string(false).map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'[') => {
                self.enter()?;
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                loop {
                    self.skip()?;
                    if !self.next_item(b']')? {
                        return Ok(());
                    }
                }
            }
            Some(b'{') => {
                self.enter()?;
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(self.error());
                    }
                    self.string(false)?;
                    self.whitespace();
                    if self.peek() != Some(b':') {
                        return Err(self.error());
                    }
                    self.pos += 1;
                    self.whitespace();
                    self.skip()?;
                    if !self.next_item(b'}')? {
                        return Ok(());
                    }
                }
            }
            _ => Err(self.error()),
        }
    }

    /// A string at its opening quote: where its body starts and ends, and
    /// whether it has escapes. A `kept` string with escapes is unescaped
    /// once to check them as serde_json would (a lone surrogate is an
    /// error); a skipped one only needs well-formed escapes, as there.
    fn string(&mut self, kept: bool) -> Result<(usize, usize, bool), MalformedJson> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Eight bytes at a time while none of them ends the plain run.
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
                let stops = string_stops(word(chunk));
                if stops != 0 {
                    self.pos += (stops.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
            let run = self.bytes[self.pos..].iter().position(|byte| STRING_STOP[*byte as usize]);
            let Some(run) = run else {
                self.pos = self.bytes.len();
                return Err(self.error());
            };
            self.pos += run;
            match self.bytes[self.pos] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            let hex = self.bytes.get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.error());
                            }
                            self.pos += 5;
                        }
                        _ => return Err(self.error()),
                    }
                }
                byte if byte >= 0x80 => {
                    ascii = false;
                    self.pos += 1;
                }
                _ => return Err(self.error()),
            }
        }
        let end = self.pos;
        self.pos += 1;
        if !ascii && std::str::from_utf8(&self.bytes[start..end]).is_err() {
            return Err(MalformedJson(start));
        }
        if kept && escaped && serde_json::from_slice::<String>(&self.bytes[start - 1..=end]).is_err() {
            return Err(MalformedJson(start));
        }
        Ok((start, end, escaped))
    }

    /// Skips a run of digits; its length. Eight bytes at a time where the
    /// answer has eight more (most numbers end within the first eight, so
    /// this is one test instead of a compare per digit).
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let stops = digit_stops(word(chunk));
            if stops != 0 {
                self.pos += (stops.trailing_zeros() / 8) as usize;
                return self.pos - start;
            }
            self.pos += 8;
        }
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number: where it starts and ends, and whether serde_json would
    /// read it as a 64-bit integer (`-0`, and integers too large for 64
    /// bits, it reads as `f64`). Numbers too large for an `f64` are
    /// errors, as there.
    fn number(&mut self) -> Result<(usize, usize, bool), MalformedJson> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error()),
        };
        let mut integer = true;
        let mut exponent = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error());
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error());
            }
            integer = false;
            exponent = true;
        }
        let text = &self.bytes[start..self.pos];
        if integer {
            let magnitude = &text[usize::from(negative)..];
            integer = if negative {
                magnitude != b"0" && (digits < 19 || parses::<i64>(text))
            } else {
                digits < 20 || parses::<u64>(text)
            };
        }
        if (exponent || text.len() > 300)
            && !std::str::from_utf8(text).ok().and_then(|text| text.parse::<f64>().ok()).is_some_and(f64::is_finite)
        {
            return Err(MalformedJson(start));
        }
        Ok((start, self.pos, integer))
    }
}

/// Whether an answer's key is a shape's key: lengths first, then eight
/// bytes at a time and the rest byte by byte (keys are short; a `memcmp`
/// call costs more than the compare).
pub(super) fn same_key(name: &[u8], key: &[u8]) -> bool {
    if name.len() != key.len() {
        return false;
    }
    let mut names = name.chunks_exact(8);
    let mut keys = key.chunks_exact(8);
    let words_equal = names.by_ref().zip(keys.by_ref()).all(|(a, b)| word(a) == word(b));
    words_equal && names.remainder().iter().zip(keys.remainder()).all(|(a, b)| a == b)
}

/// Eight bytes (a chunk of eight) as one number, the first in the lowest byte.
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

/// The high bit set in each byte of `word` (eight bytes of a string, the
/// first in the lowest byte) that is a quote, a backslash, a control
/// character or not ASCII. The tricks may also flag bytes after the first
/// flagged one, never before it, so the lowest flag is exact.
fn string_stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |value: u64| value.wrapping_sub(ONES) & !value & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash | word) & HIGH
}

/// The high bit set in each byte of `word` (eight bytes, the first in the
/// lowest byte) that is not an ASCII digit. As in [`string_stops`], bytes
/// after the first flagged one may be flagged wrongly, never one before
/// it: a borrow (of `- 0x30`) or carry (of `+ 0x76`) only leaves a byte
/// that is itself flagged.
fn digit_stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A digit byte becomes 0..=9 here; a byte below '0' gets its high bit.
    let offset = word.wrapping_sub(ONES * 0x30);
    // 10 and more (a byte above '9') reach the high bit once 0x76 is added.
    let above = offset.wrapping_add(ONES * 0x76);
    (offset | above | word) & HIGH
}

fn parses<T: std::str::FromStr>(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|text| text.parse::<T>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(keys: Vec<(&str, Shape)>) -> Shape {
        Shape::Object(Arc::new(ObjectShape {
            keys: keys.into_iter().map(|(key, shape)| (key.into(), shape)).collect(),
            call_slots: 1,
        }))
    }

    fn read(body: &'static [u8], shape: &Shape) -> (Bodies, Result<Node, MalformedJson>) {
        let mut bodies = Bodies::default();
        let index = bodies.add(Bytes::from_static(body));
        let node = parse(bodies.body(index), index, shape);
        (bodies, node)
    }

    fn text(bodies: &Bodies, node: &Node) -> String {
        match node {
            Node::Str(raw) | Node::Number(raw) => String::from_utf8_lossy(bodies.text(*raw)).into_owned(),
            other => panic!("a scalar of the answer: {other:?}"),
        }
    }

    #[test]
    fn only_the_keys_the_shape_reads_are_kept_and_scalars_are_their_text_in_the_answer() {
        let body = br#"{"results": [{"id": 1, "full_name": "Ada \"L\" \u00e9", "bio": {"long": [1, 2, 3]}, "email": "a@x"}], "count": 1}"#;
        let student = object(vec![("id", Shape::Scalar), ("full_name", Shape::Scalar), ("email", Shape::Scalar)]);
        let shape = object(vec![("results", Shape::List(Box::new(student)))]);
        let (bodies, node) = read(body, &shape);
        let Node::Object(root) = node.expect("parses") else { panic!("an object") };
        assert_eq!(root.len(), 2, "one key slot and one call slot");
        let Node::List(items) = &root[0] else { panic!("a list: {:?}", root[0]) };
        let Node::Object(student) = &items[0] else { panic!("an object") };
        assert_eq!(text(&bodies, &student[0]), "1");
        assert!(matches!(student[0], Node::Number(Raw { flag: true, .. })), "an integer");
        assert_eq!(text(&bodies, &student[1]), r#"Ada \"L\" \u00e9"#, "escapes stay as written");
        let Node::Str(name) = student[1] else { panic!("a string") };
        assert_eq!(bodies.string(name), "Ada \"L\" é", "and unescape when read");
        assert_eq!(text(&bodies, &student[2]), "a@x");
        assert_eq!(student[3], Node::Null, "the call slot starts empty");
    }

    #[test]
    fn numbers_are_integers_when_serde_json_reads_them_as_such() {
        let shape = Shape::List(Box::new(Shape::Scalar));
        let body = br#"[0, -7, 1e3, -0.5, -0, 18446744073709551615, 18446744073709551616, -9223372036854775808, 2.50]"#;
        let (bodies, node) = read(body, &shape);
        let Node::List(items) = node.expect("parses") else { panic!("a list") };
        let read: Vec<(String, bool)> = items
            .iter()
            .map(|item| match item {
                Node::Number(raw) => (text(&bodies, item), raw.flag),
                other => panic!("a number: {other:?}"),
            })
            .collect();
        let expected = [
            ("0", true),
            ("-7", true),
            ("1e3", false),
            ("-0.5", false),
            ("-0", false),
            ("18446744073709551615", true),
            ("18446744073709551616", false),
            ("-9223372036854775808", true),
            ("2.50", false),
        ];
        let expected: Vec<(String, bool)> = expected.iter().map(|(text, flag)| ((*text).to_owned(), *flag)).collect();
        assert_eq!(read, expected);
        let Node::Number(big) = items[6] else { panic!("a number") };
        assert_eq!(bodies.number(big), serde_json::json!(18446744073709551616.0_f64));
    }

    #[test]
    fn values_of_another_shape_are_kept_whole_and_malformed_answers_are_errors() {
        let shape = object(vec![("id", Shape::Scalar), ("tags", Shape::List(Box::new(Shape::Scalar)))]);
        let (_, node) = read(br#"{"id": {"x": 1}, "tags": "a", "other": [{"deep": [true, null, "\n"]}]}"#, &shape);
        let Node::Object(slots) = node.expect("parses") else { panic!("an object") };
        assert_eq!(slots[0], Node::Json(Box::new(serde_json::json!({"x": 1}))));
        assert!(matches!(&slots[1], Node::Str(_)));
        let malformed: [&'static [u8]; 16] = [
            br#"{"id": 1"#,
            br#"{"id": 1} trailing"#,
            br#"{"id": 01}"#,
            br#"{"id": 1.}"#,
            br#"{"id": -}"#,
            br#"{"id": 1e400}"#,
            br#"{"id": "a"#,
            b"{\"id\": \"a\x01b\"}",
            br#"{"id": "\x"}"#,
            br#"{"id": "\u12"}"#,
            br#"{"id": "\ud800"}"#,
            br#"{"other": [1,]}"#,
            br#"{"other": {"a" 1}}"#,
            br#"{"id": tru}"#,
            b"{\"id\": \"\xff\"}",
            br#"{"id": 1,}"#,
        ];
        for body in malformed {
            assert!(read(body, &shape).1.is_err(), "{}", String::from_utf8_lossy(body));
            assert!(serde_json::from_slice::<Json>(body).is_err(), "serde_json agrees");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep: &'static [u8] = Box::leak(format!(r#"{{"other": {deep}}}"#).into_bytes().into_boxed_slice());
        assert!(read(deep, &shape).1.is_err(), "nesting is limited as serde_json limits it");
        let (_, fine) = read(b" {\"id\" : null , \"x\\u0041\": [ ] } \n", &shape);
        assert!(fine.is_ok());
    }

    #[test]
    fn strings_end_at_their_quote_wherever_it_falls_in_an_eight_byte_word() {
        for length in 0..20 {
            for (stop, ok) in [("\\\"", true), ("\\n", true), ("é", true), ("\u{1}", false)] {
                let body = format!("[\"{}{stop}{}\", 1]", "a".repeat(length), "b".repeat(length % 9));
                let body: &'static [u8] = Box::leak(body.into_bytes().into_boxed_slice());
                let (bodies, node) = read(body, &Shape::List(Box::new(Shape::Scalar)));
                assert_eq!(node.is_ok(), ok, "{}", String::from_utf8_lossy(body));
                assert_eq!(serde_json::from_slice::<Json>(body).is_ok(), ok, "serde_json agrees");
                let Ok(Node::List(items)) = node else { continue };
                let expected: Json = serde_json::from_slice(body).expect("JSON");
                let Node::Str(raw) = items[0] else { panic!("a string: {:?}", items[0]) };
                assert_eq!(bodies.string(raw), expected[0].as_str().expect("a string"));
                assert_eq!(items.len(), 2);
            }
        }
    }

    #[test]
    fn a_run_of_digits_ends_at_its_first_other_byte_wherever_that_falls_in_an_eight_byte_word() {
        for place in 0..8 {
            for byte in 0..=255_u8 {
                for after in [b'0', b'9', b'/', b':', 0x00, 0xff, byte] {
                    let mut word = [b'7'; 8];
                    word[(place + 1).min(7)..].fill(after);
                    word[place] = byte;
                    let expected = word.iter().position(|byte| !byte.is_ascii_digit());
                    let stops = digit_stops(u64::from_le_bytes(word));
                    let found = (stops != 0).then(|| (stops.trailing_zeros() / 8) as usize);
                    assert_eq!(found, expected, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_read_the_same_however_long_and_wherever_they_end() {
        for length in 1..20 {
            for tail in ["", ".5", "e3", ".25E-2", " "] {
                let number = format!("{}{}", "1".repeat(length), tail);
                let body = format!("[{number},{number}]");
                let body: &'static [u8] = Box::leak(body.into_bytes().into_boxed_slice());
                let (bodies, node) = read(body, &Shape::List(Box::new(Shape::Scalar)));
                let Ok(Node::List(items)) = node else { panic!("a list: {node:?}") };
                let expected: Json = serde_json::from_slice(body).expect("JSON");
                for (item, expected) in items.iter().zip(expected.as_array().expect("a list")) {
                    let Node::Number(raw) = item else { panic!("a number: {item:?}") };
                    assert_eq!(bodies.text(*raw), number.trim().as_bytes());
                    assert_eq!(raw.flag, expected.is_u64(), "an integer exactly when serde_json reads one");
                }
            }
        }
    }

    #[test]
    fn list_items_are_read_by_key_whatever_their_order_and_however_keys_are_spelled() {
        let item = object(vec![
            ("id", Shape::Scalar),
            ("name", Shape::Scalar),
            ("a\"b", Shape::Scalar),
            ("idx", Shape::Scalar),
        ]);
        let shape = Shape::List(Box::new(item));
        let body = br#"[{"id": 1, "name": "a", "idx": 10},
            {"name": "b", "id": 2, "skip": {"id": 9}, "idx": 20},
            {"i\u0064": 3, "idx": 30, "name": "c", "a\"b": "quoted key"},
            {"idx": 40, "nam": 0, "id": 4, "names": 1, "": 2},
            {"id": 5, "name": "e"}]"#;
        let (bodies, node) = read(body, &shape);
        let Node::List(items) = node.expect("parses") else { panic!("a list") };
        let expected: Json = serde_json::from_slice(body).expect("JSON");
        for (item, json) in items.iter().zip(expected.as_array().expect("a list")) {
            let Node::Object(slots) = item else { panic!("an object: {item:?}") };
            for (slot, key) in ["id", "name", "a\"b", "idx"].iter().enumerate() {
                let read = match &slots[slot] {
                    Node::Null => Json::Null,
                    Node::Str(raw) => Json::String(bodies.string(*raw).into_owned()),
                    Node::Number(raw) => bodies.number(*raw),
                    other => panic!("a scalar: {other:?}"),
                };
                assert_eq!(read, json.get(*key).cloned().unwrap_or(Json::Null), "{key} of {json}");
            }
        }
    }

    #[test]
    fn readers_of_one_key_share_its_slot_and_their_needs_merge() {
        let mut builder = ShapeBuilder::default();
        let id = builder.require("id", Need::Scalar);
        let profile = builder.require("profile", Need::Scalar);
        builder.object_at(profile, 0).require("level", Need::Scalar);
        assert_eq!(builder.require("id", Need::Scalar), id);
        let built = builder.build();
        assert_eq!(built.keys.len(), 2);
        let Shape::Object(inner) = &built.keys[1].1 else { panic!("an object wins over a scalar") };
        assert_eq!(&*inner.keys[0].0, "level");
    }
}
