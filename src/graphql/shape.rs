//! Backend answers read by shape: a plan knows, for every backend call,
//! which keys of the answer any selected field (or a child call's
//! `$parent.x`) reads, so the answer is parsed into a [`Node`] tree holding
//! only those keys. Everything else is skipped by the parser without being
//! built, and strings without escapes are slices of the answer's bytes, not
//! copies: the response writer copies them once, into the response.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// A string of a backend answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    /// A slice of the answer: the JSON text had no escapes, so these bytes
    /// are already a valid JSON string body.
    Raw(Bytes),
    /// A string that had escapes, unescaped.
    Owned(Box<str>),
}

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        match self {
            // Only ever made from a `&str` (see `Reader::visit_borrowed_str`).
            Text::Raw(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Text::Owned(text) => text,
        }
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
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Text),
    /// A list.
    List(Vec<Node>),
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
    /// A JSON value for `$parent.x` expressions and batch keys.
    pub fn to_json(&self) -> Json {
        match self {
            Node::Null | Node::Object(_) | Node::Call(_) | Node::Keyed { .. } => Json::Null,
            Node::Bool(flag) => Json::Bool(*flag),
            Node::Int(number) => Json::from(*number),
            Node::UInt(number) => Json::from(*number),
            Node::Float(number) => serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number),
            Node::Str(text) => Json::String(text.as_str().to_owned()),
            Node::List(items) => Json::Array(items.iter().map(Node::to_json).collect()),
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
            (Json::String(text), _) => Node::Str(Text::Owned(text.into())),
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

/// Parses a backend answer, keeping what `shape` reads.
pub fn parse(body: &Bytes, shape: &Shape) -> Result<Node, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let node = Reader { shape, body }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(node)
}

/// Reads one value of the answer in `body` by `shape`.
#[derive(Clone, Copy)]
struct Reader<'s> {
    shape: &'s Shape,
    body: &'s Bytes,
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Node;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        match self.shape {
            Shape::Any => {
                let json: Json = de::Deserialize::deserialize(deserializer)?;
                Ok(if json.is_null() { Node::Null } else { Node::Json(Box::new(json)) })
            }
            _ => deserializer.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Node;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node, E> {
        Ok(Node::Int(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node, E> {
        Ok(Node::UInt(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node, E> {
        Ok(Node::Float(value))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Node, E> {
        // serde_json lends a string without escapes straight from the input:
        // keep it as a slice of the answer. The range check keeps this safe
        // should a string ever come from elsewhere.
        let start = (value.as_ptr() as usize).wrapping_sub(self.body.as_ptr() as usize);
        if start <= self.body.len() && value.len() <= self.body.len() - start {
            return Ok(Node::Str(Text::Raw(self.body.slice(start..start + value.len()))));
        }
        Ok(Node::Str(Text::Owned(value.into())))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node, E> {
        Ok(Node::Str(Text::Owned(value.into())))
    }

    fn visit_string<E>(self, value: String) -> Result<Node, E> {
        Ok(Node::Str(Text::Owned(value.into_boxed_str())))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let Shape::List(inner) = self.shape else {
            let json: Json = de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            return Ok(Node::Json(Box::new(json)));
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Reader { shape: inner, body: self.body })? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Shape::Object(object) = self.shape else {
            let json: Json = de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
            return Ok(Node::Json(Box::new(json)));
        };
        let mut slots = empty_slots(object.slots());
        while let Some(slot) = map.next_key_seed(KeySlot(object))? {
            match slot {
                Some(slot) => {
                    slots[slot] = map.next_value_seed(Reader { shape: &object.keys[slot].1, body: self.body })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Node::Object(slots))
    }
}

/// Finds a key's slot without allocating the key.
struct KeySlot<'s>(&'s ObjectShape);

impl<'de> DeserializeSeed<'de> for KeySlot<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySlot<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.slot_of(key))
    }
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

    #[test]
    fn only_the_keys_the_shape_reads_are_kept_and_plain_strings_are_slices_of_the_answer() {
        let body = Bytes::from_static(
            br#"{"results": [{"id": 1, "full_name": "Ada \"L\"", "bio": {"long": [1, 2, 3]}, "email": "a@x"}], "count": 1}"#,
        );
        let student = object(vec![("id", Shape::Scalar), ("full_name", Shape::Scalar), ("email", Shape::Scalar)]);
        let shape = object(vec![("results", Shape::List(Box::new(student)))]);
        let node = parse(&body, &shape).expect("parses");
        let Node::Object(root) = node else { panic!("an object: {node:?}") };
        assert_eq!(root.len(), 2, "one key slot and one call slot");
        let Node::List(items) = &root[0] else { panic!("a list: {:?}", root[0]) };
        let Node::Object(student) = &items[0] else { panic!("an object") };
        assert_eq!(student[0], Node::UInt(1));
        assert_eq!(student[1], Node::Str(Text::Owned("Ada \"L\"".into())), "escaped strings are unescaped");
        let Node::Str(Text::Raw(email)) = &student[2] else { panic!("a raw slice: {:?}", student[2]) };
        assert_eq!(&email[..], b"a@x");
        assert_eq!(student[3], Node::Null, "the call slot starts empty");
    }

    #[test]
    fn values_of_another_shape_are_kept_whole_and_malformed_answers_are_errors() {
        let shape = object(vec![("id", Shape::Scalar), ("tags", Shape::List(Box::new(Shape::Scalar)))]);
        let node = parse(&Bytes::from_static(br#"{"id": {"x": 1}, "tags": "a"}"#), &shape).expect("parses");
        let Node::Object(slots) = node else { panic!("an object") };
        assert_eq!(slots[0], Node::Json(Box::new(serde_json::json!({"x": 1}))));
        assert!(matches!(&slots[1], Node::Str(_)));
        assert!(parse(&Bytes::from_static(br#"{"id": 1"#), &shape).is_err());
        assert!(parse(&Bytes::from_static(br#"{"id": 1} trailing"#), &shape).is_err());
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
