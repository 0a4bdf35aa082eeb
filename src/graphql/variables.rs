//! Coerces a request's variables to the operation's declared types
//! (GraphQL spec §6.1.2, CoerceVariableValues): the one check that depends
//! on the request and not on the document, so it runs per request while the
//! document's validation runs once per plan. Linear in the variables' size.

use async_graphql::{Name, Variables};
use async_graphql_parser::types::{BaseType, Type};
use async_graphql_value::ConstValue;

use super::model::SchemaModel;
use super::plan::VariableSpec;

/// The variables, coerced; or the first problem, naming the variable.
/// `files` is how many files the request carries (a multipart request's):
/// an `Upload` value must be the marker of one of them.
pub fn coerce(
    model: &SchemaModel,
    specs: &[VariableSpec],
    given: &Variables,
    files: usize,
) -> Result<Variables, String> {
    let mut coerced = Variables::default();
    for spec in specs {
        match given.get(&spec.name) {
            None => match &spec.default {
                Some(default) => {
                    coerced.insert(spec.name.clone(), default.clone());
                }
                None if !spec.ty.nullable => {
                    return Err(format!("variable ${} of required type {} was not provided", spec.name, spec.ty));
                }
                None => {}
            },
            Some(value) => {
                let value = coerce_value(model, &spec.ty, value.clone(), files)
                    .map_err(|problem| format!("variable ${} got an invalid value: {problem}", spec.name))?;
                coerced.insert(spec.name.clone(), value);
            }
        }
    }
    Ok(coerced)
}

/// Whether a variable is `true`, by index: what `@skip`/`@include` read.
pub fn flags(specs: &[VariableSpec], variables: &Variables) -> Vec<bool> {
    specs.iter().map(|spec| matches!(variables.get(&spec.name), Some(ConstValue::Boolean(true)))).collect()
}

fn coerce_value(model: &SchemaModel, ty: &Type, value: ConstValue, files: usize) -> Result<ConstValue, String> {
    if value == ConstValue::Null {
        return if ty.nullable { Ok(ConstValue::Null) } else { Err(format!("null for non-null type {ty}")) };
    }
    match &ty.base {
        BaseType::List(inner) => match value {
            ConstValue::List(items) => items
                .into_iter()
                .map(|item| coerce_value(model, inner, item, files))
                .collect::<Result<_, _>>()
                .map(ConstValue::List),
            // A single value where a list is expected is a list of one.
            single => coerce_value(model, inner, single, files).map(|item| ConstValue::List(vec![item])),
        },
        BaseType::Named(name) => coerce_named(model, name.as_str(), value, files),
    }
}

fn coerce_named(model: &SchemaModel, name: &str, value: ConstValue, files: usize) -> Result<ConstValue, String> {
    let mismatch = |value: &ConstValue| format!("{value} is not a valid {name}");
    match name {
        "Int" => match &value {
            ConstValue::Number(number) if number.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => Ok(value),
            _ => Err(mismatch(&value)),
        },
        "Float" => match &value {
            ConstValue::Number(_) => Ok(value),
            _ => Err(mismatch(&value)),
        },
        "String" => match &value {
            ConstValue::String(_) => Ok(value),
            _ => Err(mismatch(&value)),
        },
        "Boolean" => match &value {
            ConstValue::Boolean(_) => Ok(value),
            _ => Err(mismatch(&value)),
        },
        "ID" => match value {
            ConstValue::String(_) => Ok(value),
            ConstValue::Number(ref number) if number.is_i64() || number.is_u64() => {
                Ok(ConstValue::String(number.to_string()))
            }
            other => Err(mismatch(&other)),
        },
        super::sdl::UPLOAD => {
            match upload_index(&value) {
                Some(index) if index < files => Ok(value),
                _ => Err("an Upload is a file: send the operation as a multipart request and map a file part to it"
                    .to_owned()),
            }
        }
        _ => {
            if let Some(enumeration) = model.enums.get(name) {
                let text = match &value {
                    ConstValue::String(text) => text.as_str(),
                    ConstValue::Enum(item) => item.as_str(),
                    _ => return Err(mismatch(&value)),
                };
                return match enumeration.values.iter().find(|item| item.as_str() == text) {
                    Some(item) => Ok(ConstValue::Enum(Name::new(item))),
                    None => Err(mismatch(&value)),
                };
            }
            if let Some(input) = model.inputs.get(name) {
                let ConstValue::Object(mut fields) = value else { return Err(mismatch(&value)) };
                if let Some(unknown) =
                    fields.keys().find(|key| !input.fields.iter().any(|field| field.name == key.as_str()))
                {
                    return Err(format!("{name} has no field {unknown}"));
                }
                let mut coerced = async_graphql::indexmap::IndexMap::with_capacity(input.fields.len());
                for field in &input.fields {
                    let key = Name::new(&field.name);
                    match fields.swap_remove(&key) {
                        Some(given) => {
                            let value = coerce_value(model, &field.ty, given, files)
                                .map_err(|problem| format!("{name}.{}: {problem}", field.name))?;
                            coerced.insert(key, value);
                        }
                        None => match &field.default {
                            Some(default) => {
                                coerced.insert(key, default.clone());
                            }
                            None if !field.ty.nullable => {
                                return Err(format!(
                                    "{name}.{} of required type {} was not provided",
                                    field.name, field.ty
                                ));
                            }
                            None => {}
                        },
                    }
                }
                return Ok(ConstValue::Object(coerced));
            }
            // Custom scalars take any value.
            Ok(value)
        }
    }
}

/// The file index of an `Upload` marker (`{"$upload": 0}`).
fn upload_index(value: &ConstValue) -> Option<usize> {
    match value {
        ConstValue::Object(fields) if fields.len() == 1 => match fields.get(super::upload::MARKER) {
            Some(ConstValue::Number(index)) => index.as_u64().and_then(|index| usize::try_from(index).ok()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ty: &str, default: Option<ConstValue>) -> VariableSpec {
        VariableSpec { name: Name::new(name), ty: Type::new(ty).expect("a type"), default }
    }

    fn model() -> SchemaModel {
        let sources = [super::super::sdl::SchemaSource {
            file: "test".to_owned(),
            text: super::super::DEFAULT_SCHEMA.to_owned(),
        }];
        let services = ["student_api", "live_reading", "payment"].map(str::to_owned).into_iter().collect();
        super::super::sdl::load(&sources, &services).expect("the default schema loads")
    }

    #[test]
    fn values_are_coerced_to_their_declared_types() {
        let model = model();
        let specs = [
            spec("id", "ID!", None),
            spec("ids", "[ID!]", None),
            spec("first", "Int", Some(ConstValue::from(5))),
            spec("input", "CheckoutInput!", None),
        ];
        let given = Variables::from_json(serde_json::json!({
            "id": 7, "ids": 3, "input": {"studentId": 1, "amount": "49.00", "currency": "USD"}
        }));
        let coerced = coerce(&model, &specs, &given, 0).expect("coerces");
        assert_eq!(coerced.get(&Name::new("id")), Some(&ConstValue::String("7".to_owned())));
        assert_eq!(coerced.get(&Name::new("ids")), Some(&ConstValue::List(vec![ConstValue::String("3".to_owned())])));
        assert_eq!(coerced.get(&Name::new("first")), Some(&ConstValue::from(5)));
    }

    #[test]
    fn missing_wrong_and_unknown_values_are_refused_with_the_variable_named() {
        let model = model();
        let specs = [spec("id", "ID!", None), spec("first", "Int", None), spec("input", "CheckoutInput", None)];
        let refused = |json| coerce(&model, &specs, &Variables::from_json(json), 0).expect_err("refused");
        assert!(refused(serde_json::json!({})).contains("$id"));
        assert!(refused(serde_json::json!({"id": null})).contains("$id"));
        assert!(refused(serde_json::json!({"id": 1, "first": "ten"})).contains("$first"));
        assert!(refused(serde_json::json!({"id": 1, "first": 3_000_000_000_u64})).contains("$first"));
        let unknown =
            refused(serde_json::json!({"id": 1, "input": {"studentId": 1, "amount": "1", "currency": "USD", "x": 1}}));
        assert!(unknown.contains("no field x"), "{unknown}");
        let missing = refused(serde_json::json!({"id": 1, "input": {"studentId": 1}}));
        assert!(missing.contains("amount"), "{missing}");
    }

    #[test]
    fn an_upload_is_only_the_marker_of_one_of_the_requests_files() {
        let model = model();
        let specs = [spec("file", "Upload!", None), spec("more", "[Upload!]", None)];
        let given = |json| Variables::from_json(json);
        let marker = serde_json::json!({"$upload": 0});
        let coerced = coerce(&model, &specs, &given(serde_json::json!({"file": marker, "more": [{"$upload": 1}]})), 2)
            .expect("two files");
        assert_eq!(coerced.get(&Name::new("file")).cloned().map(|value| value.into_json().ok()), Some(Some(marker)));
        for refused in [
            serde_json::json!({"file": "/etc/passwd"}),
            serde_json::json!({"file": {"$upload": 2}}),
            serde_json::json!({"file": {"$upload": 0, "x": 1}}),
            serde_json::json!({"file": {"$upload": 0}, "more": ["x"]}),
        ] {
            let problem = coerce(&model, &specs, &given(refused.clone()), 2).expect_err("refused");
            assert!(problem.contains("an Upload is a file"), "{refused}: {problem}");
        }
        assert!(coerce(&model, &specs, &given(serde_json::json!({"file": {"$upload": 0}})), 0).is_err(), "no files");
    }
}
