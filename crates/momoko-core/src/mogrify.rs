//! `mogrify`: a query with its parameters turned into SQL literals.
//!
//! As in psycopg2, each value's SQL type comes from its Rust type, and the statement itself is
//! never sent to the server: it may be one that takes no parameters (`FETCH $1 FROM c`), and a
//! `mogrify` inside a transaction cannot abort it. Values are rendered as their PostgreSQL text
//! form and quoted by [`sql::quote_literal`], so the server reads back exactly the same value and
//! no value can alter the statement. Booleans, integers, floats, text, bytea and JSON are rendered
//! locally; the other types (timestamps, arrays, UUIDs, …) are converted to text by the server
//! itself (`SELECT $1::text`, one round trip) and then quoted with an explicit cast.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, Type};

use crate::connection::{sql_text_error, Connection, Param};
use crate::error::{Error, Result};
use crate::sql;

pub(crate) async fn mogrify(
    conn: &Connection,
    query: &str,
    params: &[Param<'_>],
) -> Result<String> {
    let used = sql::max_placeholder(query).map_err(sql_text_error)?;
    if used != params.len() {
        return Err(Error::parameter(format!(
            "the query uses placeholders up to ${used} but {} parameter{} given",
            params.len(),
            if params.len() == 1 { " was" } else { "s were" }
        )));
    }
    if params.is_empty() {
        return Ok(query.to_owned());
    }
    let types = infer_types(params)?;

    let mut literals: Vec<Option<String>> = Vec::with_capacity(params.len());
    let mut remote: Vec<usize> = Vec::new();
    let mut buf = BytesMut::new();
    for (i, (param, ty)) in params.iter().zip(&types).enumerate() {
        buf.clear();
        let null = param.to_sql_checked(ty, &mut buf).map_err(|e| {
            Error::parameter(format!(
                "parameter ${} cannot be sent as {}: {e}",
                i + 1,
                ty.name()
            ))
        })?;
        if let IsNull::Yes = null {
            literals.push(Some("NULL".to_owned()));
            continue;
        }
        literals.push(local_literal(ty, &buf, i)?);
        if literals[i].is_none() {
            remote.push(i);
        }
    }

    if !remote.is_empty() {
        let select = remote
            .iter()
            .enumerate()
            .map(|(k, _)| format!("${}::text", k + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let remote_types: Vec<Type> = remote.iter().map(|&i| types[i].clone()).collect();
        let remote_params: Vec<Param<'_>> = remote.iter().map(|&i| params[i]).collect();
        let statement = conn
            .prepare_typed(&format!("SELECT {select}"), &remote_types)
            .await?;
        let cursor = conn.query_statement(&statement, &remote_params).await?;
        let row = cursor.rows().first().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Protocol,
                "mogrify: no row from the server",
            )
        })?;
        for (k, &i) in remote.iter().enumerate() {
            let text: Option<&str> = row.try_get(k).map_err(Error::from_pg)?;
            let literal = match text {
                None => "NULL".to_owned(),
                Some(t) => format!(
                    "{}::{}",
                    sql::quote_literal(t).map_err(sql_text_error)?,
                    type_name(&types[i])?
                ),
            };
            literals[i] = Some(literal);
        }
    }

    let literals: Vec<String> = literals
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    sql::substitute(query, &literals).map_err(sql_text_error)
}

/// Renders the values whose text form is known without the server; `None` for the rest.
fn local_literal(ty: &Type, bin: &[u8], index: usize) -> Result<Option<String>> {
    let bad = || Error::parameter(format!("parameter ${} has an invalid encoding", index + 1));
    let quoted = |text: &str, cast: &str| -> Result<Option<String>> {
        let lit = sql::quote_literal(text).map_err(|e| match e {
            sql::SqlTextError::NulInText => Error::parameter(format!(
                "parameter ${} contains a NUL byte, which PostgreSQL text cannot store",
                index + 1
            )),
            other => sql_text_error(other),
        })?;
        Ok(Some(if cast.is_empty() {
            lit
        } else {
            format!("{lit}::{cast}")
        }))
    };
    let lit = match *ty {
        Type::BOOL => Some(
            if bin.first().copied().unwrap_or(0) != 0 {
                "true"
            } else {
                "false"
            }
            .to_owned(),
        ),
        Type::INT2 => Some(read_i16(bin).ok_or_else(bad)?.to_string()),
        Type::INT4 => Some(read_i32(bin).ok_or_else(bad)?.to_string()),
        Type::INT8 => Some(read_i64(bin).ok_or_else(bad)?.to_string()),
        Type::OID => Some(read_u32(bin).ok_or_else(bad)?.to_string()),
        Type::FLOAT4 => {
            let v = f32::from_bits(read_u32(bin).ok_or_else(bad)?);
            return quoted(&float_text(f64::from(v), format!("{v:?}")), "float4");
        }
        Type::FLOAT8 => {
            let v = f64::from_bits(read_u64(bin).ok_or_else(bad)?);
            return quoted(&float_text(v, format!("{v:?}")), "float8");
        }
        // Text goes untyped, like psycopg2's strings, so it fits any context.
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            return quoted(std::str::from_utf8(bin).map_err(|_| bad())?, "");
        }
        Type::BYTEA => {
            let mut hex = String::with_capacity(2 + 2 * bin.len());
            hex.push_str("\\x");
            for b in bin {
                hex.push_str(&format!("{b:02x}"));
            }
            return quoted(&hex, "bytea");
        }
        Type::JSON => return quoted(std::str::from_utf8(bin).map_err(|_| bad())?, "json"),
        Type::JSONB => match bin.split_first() {
            Some((1, text)) => {
                return quoted(std::str::from_utf8(text).map_err(|_| bad())?, "jsonb")
            }
            _ => None,
        },
        _ => None,
    };
    // Parentheses keep a negative number one token whatever surrounds the placeholder.
    Ok(lit.map(|l| {
        if l.starts_with('-') {
            format!("({l})")
        } else {
            l
        }
    }))
}

/// PostgreSQL's spelling of a float: `NaN`, `Infinity`, `-Infinity`, or the shortest decimal
/// that reads back as the same value.
fn float_text(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        shortest
    }
}

/// The type's name for a cast: builtin names bare, others schema-qualified and quoted.
fn type_name(ty: &Type) -> Result<String> {
    if ty.schema() == "pg_catalog"
        && ty
            .name()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Ok(ty.name().to_owned());
    }
    Ok(format!(
        "{}.{}",
        sql::quote_identifier(ty.schema()).map_err(sql_text_error)?,
        sql::quote_identifier(ty.name()).map_err(sql_text_error)?
    ))
}

/// The SQL types a Rust value may map to, in order of preference (the first the value accepts
/// wins).
const CANDIDATES: &[Type] = &[
    Type::BOOL,
    Type::INT4,
    Type::INT8,
    Type::INT2,
    Type::FLOAT8,
    Type::FLOAT4,
    Type::TEXT,
    Type::BYTEA,
    Type::JSON,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP,
    Type::DATE,
    Type::TIME,
    Type::UUID,
    Type::INTERVAL,
    Type::INET,
    Type::OID,
    Type::CHAR,
    Type::TIMESTAMPTZ_ARRAY,
    Type::UUID_ARRAY,
    Type::JSON_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::INT2_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::TEXT_ARRAY,
    Type::BOOL_ARRAY,
    Type::BYTEA_ARRAY,
    Type::JSONB_ARRAY,
];

fn infer_types(params: &[Param<'_>]) -> Result<Vec<Type>> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut buf = BytesMut::new();
            CANDIDATES
                .iter()
                .find(|ty| {
                    buf.clear();
                    p.to_sql_checked(ty, &mut buf).is_ok()
                })
                .cloned()
                .ok_or_else(|| {
                    Error::parameter(format!(
                        "cannot tell the SQL type of parameter ${} for mogrify: the value is not a \
                         bool, integer, float, text, bytea, JSON, timestamp, UUID or an array of those",
                        i + 1
                    ))
                })
        })
        .collect()
}

fn read_i16(b: &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes(b.try_into().ok()?))
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.try_into().ok()?))
}

fn read_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}
