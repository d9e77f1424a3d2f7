//! Arrow arrays to label [`Value`]s: the types a label column may have in a Parquet data set
//! or in `examples.parquet`.

use crate::{DataError, Result, Value};
use arrow_array::{Array, BooleanArray};
use arrow_schema::DataType;
use std::path::Path;

pub(crate) fn arrow_values(path: &Path, name: &str, array: &dyn Array) -> Result<Vec<Value>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let n = array.len();
    let get = |i: usize, f: &dyn Fn(usize) -> Value| {
        if array.is_null(i) {
            Value::Null
        } else {
            f(i)
        }
    };
    let values = match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..n)
                .map(|i| get(i, &|i| Value::Str(a.value(i).to_owned())))
                .collect()
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..n)
                .map(|i| get(i, &|i| Value::Str(a.value(i).to_owned())))
                .collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..n)
                .map(|i| get(i, &|i| Value::Str(a.value(i).to_owned())))
                .collect()
        }
        DataType::Boolean => {
            let a: &BooleanArray = array.as_boolean();
            (0..n)
                .map(|i| get(i, &|i| Value::Bool(a.value(i))))
                .collect()
        }
        DataType::Int8 => ints(array.as_primitive::<Int8Type>(), n),
        DataType::Int16 => ints(array.as_primitive::<Int16Type>(), n),
        DataType::Int32 => ints(array.as_primitive::<Int32Type>(), n),
        DataType::Int64 => ints(array.as_primitive::<Int64Type>(), n),
        DataType::UInt8 => ints(array.as_primitive::<UInt8Type>(), n),
        DataType::UInt16 => ints(array.as_primitive::<UInt16Type>(), n),
        DataType::UInt32 => ints(array.as_primitive::<UInt32Type>(), n),
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Value::Null
                } else {
                    Value::Int(i64::try_from(a.value(i)).map_err(|_| DataError::BadColumn {
                        path: path.to_path_buf(),
                        column: name.to_owned(),
                        message: format!(
                            "value {} at row {} does not fit a signed 64-bit integer",
                            a.value(i),
                            i + 1
                        ),
                    })?)
                });
            }
            out
        }
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            (0..n)
                .map(|i| get(i, &|i| Value::Float(a.value(i) as f64)))
                .collect()
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| get(i, &|i| Value::Float(a.value(i))))
                .collect()
        }
        // Categorical columns (pandas `category`, polars `Categorical`, pyarrow's
        // `dictionary_encode`): each row's value looked up in the dictionary.
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let values = arrow_values(path, name, dict.values().as_ref())?;
            dict.normalized_keys()
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    if dict.keys().is_null(i) {
                        Value::Null
                    } else {
                        values[k].clone()
                    }
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let lists: Vec<Option<arrow_array::ArrayRef>> = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().iter().collect(),
                _ => array.as_list::<i64>().iter().collect(),
            };
            let mut out = Vec::with_capacity(n);
            for list in lists {
                out.push(match list {
                    None => Value::Null,
                    Some(items) => Value::List(
                        arrow_values(path, name, items.as_ref())?
                            .into_iter()
                            .map(|v| match v {
                                Value::List(_) => Err(DataError::BadColumn {
                                    path: path.to_path_buf(),
                                    column: name.to_owned(),
                                    message: "nested lists are not supported".into(),
                                }),
                                other => Ok(other.class_name()),
                            })
                            .collect::<Result<_>>()?,
                    ),
                });
            }
            out
        }
        other => {
            return Err(DataError::BadColumn {
                path: path.to_path_buf(),
                column: name.to_owned(),
                message: format!(
                    "type {other} is not supported; use string, integer, float, boolean or a list of those"
                ),
            })
        }
    };
    Ok(values)
}

fn ints<T>(a: &arrow_array::PrimitiveArray<T>, n: usize) -> Vec<Value>
where
    T: arrow_array::ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    (0..n)
        .map(|i| {
            if a.is_null(i) {
                Value::Null
            } else {
                Value::Int(a.value(i).into())
            }
        })
        .collect()
}
