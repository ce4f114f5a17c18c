//! Statements without names, for a transaction-mode pooler (pgbouncer before 1.21 and others
//! that do not track prepared statements): each statement is one Parse/Bind/Describe/Execute/Sync
//! exchange on the unnamed statement, so nothing outlives the transaction it ran in.
//!
//! A named statement prepared through such a pooler lives on one server connection, and the
//! next Bind may reach another ("prepared statement … does not exist"), or collide with another
//! client's statement of the same name. The price: the parameter types are not asked of the
//! server (that would take a second exchange, which the pooler may send elsewhere); they come
//! from the Rust values, as with sqlx, and a value that fits no listed type is refused clearly.

use bytes::BytesMut;
use tokio_postgres::types::Type;

use crate::connection::Param;
use crate::error::{Error, Result};

/// The SQL type sent for a Rust value: the first of these it accepts. Each common Rust type
/// accepts one of them, or several that read alike (`String`: text first); where the choice
/// matters, the more common column type comes first (`jsonb` before `json`, `timestamptz`
/// before `timestamp` for `SystemTime`).
const PREFERRED: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::BYTEA,
    Type::JSONB,
    Type::JSON,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP,
    Type::DATE,
    Type::TIME,
    Type::INTERVAL,
    Type::UUID,
    Type::INET,
    Type::OID,
    Type::CHAR,
    Type::BOOL_ARRAY,
    Type::INT2_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSON_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::UUID_ARRAY,
];

/// The type each parameter is sent as (see [`PREFERRED`]).
///
/// # Errors
///
/// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) for a value that fits none of them.
pub(crate) fn param_types(params: &[Param<'_>]) -> Result<Vec<Type>> {
    let mut buf = BytesMut::new();
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            PREFERRED
                .iter()
                .find(|ty| {
                    buf.clear();
                    p.to_sql_checked(ty, &mut buf).is_ok()
                })
                .cloned()
                .ok_or_else(|| {
                    Error::parameter(format!(
                        "parameter ${}: its SQL type cannot be told from its Rust type, and a \
                         connection for a transaction pooler does not ask the server; send it \
                         as a bool, integer, float, text, bytea, JSON, timestamp, date, time, \
                         interval, UUID, inet or an array of those",
                        i + 1
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_pick_their_sql_type() {
        let text = String::from("x");
        let json = serde_json::json!({"a": 1});
        let none: Option<i64> = None;
        let params: [Param<'_>; 7] = [&true, &7i16, &7i32, &7i64, &1.5f64, &text, &json];
        assert_eq!(
            param_types(&params).unwrap(),
            [
                Type::BOOL,
                Type::INT2,
                Type::INT4,
                Type::INT8,
                Type::FLOAT8,
                Type::TEXT,
                Type::JSONB
            ]
        );
        assert_eq!(param_types(&[&none]).unwrap(), [Type::INT8]);
        assert_eq!(param_types(&[&"str"]).unwrap(), [Type::TEXT]);
        assert_eq!(param_types(&[&vec![1i32, 2]]).unwrap(), [Type::INT4_ARRAY]);
    }

    #[test]
    fn a_value_of_no_listed_type_is_refused() {
        // u32 accepts only oid: listed.
        assert_eq!(param_types(&[&7u32]).unwrap(), [Type::OID]);
        // A HashMap is hstore, an extension type with no fixed OID: not listed.
        let h: std::collections::HashMap<String, Option<String>> = Default::default();
        let e = param_types(&[&1i32, &h]).unwrap_err();
        assert!(e.is_parameter() && e.to_string().contains("$2"), "{e}");
    }
}
