//! Strict `LabelSelector` decoding (`matchLabels` + `matchExpressions`) for kinds where an
//! unusable selector rejects the object.

use serde_json::Value;
use smol_str::SmolStr;

use super::{ObjectError, invalid};
use crate::model::{LabelRequirement, LabelSelector};

/// `None` for an absent (or null) selector.
pub(super) fn optional(
    value: Option<&Value>,
    field: &str,
) -> Result<Option<LabelSelector>, ObjectError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => required(value, field).map(Some),
    }
}

/// A selector that must be a mapping (`{}` selects everything).
pub(super) fn required(value: &Value, field: &str) -> Result<LabelSelector, ObjectError> {
    let Value::Object(fields) = value else {
        return Err(invalid(field, "must be a mapping"));
    };
    let mut out = LabelSelector::default();
    match fields.get("matchLabels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                if key.is_empty() {
                    return Err(invalid(format!("{field}.matchLabels"), "empty label key"));
                }
                out.match_labels.insert(
                    SmolStr::new(key),
                    label_value(value, &format!("{field}.matchLabels[{key}]"))?,
                );
            }
        }
        Some(_) => return Err(invalid(format!("{field}.matchLabels"), "must be a mapping")),
    }
    match fields.get("matchExpressions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(expressions)) => {
            for (index, expression) in expressions.iter().enumerate() {
                let at = format!("{field}.matchExpressions[{index}]");
                out.match_expressions.push(requirement(expression, &at)?);
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("{field}.matchExpressions"),
                "must be a list",
            ));
        }
    }
    Ok(out)
}

fn label_value(value: &Value, field: &str) -> Result<SmolStr, ObjectError> {
    match value {
        Value::String(text) => Ok(SmolStr::new(text)),
        Value::Number(number) => Ok(SmolStr::new(number.to_string())),
        Value::Bool(flag) => Ok(SmolStr::new(flag.to_string())),
        other => Err(invalid(field, format!("`{other}` is not a label value"))),
    }
}

fn requirement(expression: &Value, field: &str) -> Result<LabelRequirement, ObjectError> {
    let Value::Object(fields) = expression else {
        return Err(invalid(
            field,
            "must be a mapping with key, operator and values",
        ));
    };
    let string = |key: &str| match fields.get(key) {
        Some(Value::String(text)) => Ok(text.as_str()),
        None | Some(Value::Null) => Err(super::missing(format!("{field}.{key}"))),
        Some(other) => Err(invalid(
            format!("{field}.{key}"),
            format!("`{other}` is not a string"),
        )),
    };
    let values = match fields.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| label_value(v, &format!("{field}.values")).map(String::from))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{field}.values"), "must be a list")),
    };
    LabelRequirement::new(string("key")?, string("operator")?, values)
        .map_err(|error| invalid(field, error.to_string()))
}
