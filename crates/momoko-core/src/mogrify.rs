//! `mogrify`: a query with its parameters turned into SQL literals.
//!
//! The rule is that a rendered literal reads back as exactly the value
//! [`execute`](crate::Connection::execute) would bind for the same parameter, or rendering fails
//! with an [`ErrorKind::Parameter`] error; it never yields a different value. How each
//! parameter's SQL type is decided:
//!
//! 1. **From the statement**, when its parameter types are known (the connection supplies them:
//!    the statement is in its cache, or it could be prepared without disturbing the session).
//!    The value is encoded with `to_sql_checked` for that type, the very bytes `execute` sends,
//!    and those bytes are rendered as a literal of that type. Bytes the server would reject are
//!    an error here too.
//! 2. **From the value**, otherwise, or when the value does not accept the statement's type at
//!    all (then `execute` would refuse it before sending anything, so there is no bound value to
//!    contradict; `SELECT $1` with an integer or bytes keeps working as in psycopg2). Every type
//!    of [`CANDIDATES`] the value accepts is tried; when their renderings differ (ignoring the
//!    cast), the type is ambiguous and rendering fails, naming the fix. Nothing is picked
//!    arbitrarily.
//!
//! Values are rendered as their PostgreSQL text form and quoted by [`sql::quote_literal`], so no
//! value can alter the statement. Booleans, integers, floats, text, bytea and JSON are rendered
//! here; every other type (timestamps, arrays, UUIDs, …) is converted to text by the server
//! itself, from the same bytes bound as the same type, and then quoted with an explicit cast.
//! Text is written as an untyped string literal, so it fits any context, like psycopg2's strings.
//!
//! This module does no I/O. [`Rendering::start`] renders what it can and lists the
//! [`conversions`](Rendering::conversions) it needs from the server;
//! [`Rendering::finish`] completes the query from the server's texts.

use std::fmt;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, WrongType};

use crate::error::{Error, ErrorKind, Result};
use crate::sql::{self, SqlTextError};

/// A value to render: the same as a statement parameter.
pub(crate) type Value<'a> = &'a (dyn ToSql + Sync);

/// The SQL types a value is tried as when the statement does not say, in order of preference
/// (among renderings that agree, the first is used). `name` is left out: unlike text, it rejects
/// values of 64 bytes or more when bound, so it does not render like the other text types.
const CANDIDATES: &[Type] = &[
    Type::BOOL,
    Type::INT4,
    Type::INT8,
    Type::INT2,
    Type::FLOAT8,
    Type::FLOAT4,
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
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

/// The longest `name` the server accepts when bound (`NAMEDATALEN - 1` bytes with the default
/// build); longer names are left to the server to judge.
const NAME_MAX_BYTES: usize = 63;

/// Checks that `given` values fill the placeholders of `query` exactly.
///
/// # Errors
///
/// [`ErrorKind::Parameter`] when the counts differ or the query cannot be lexed.
pub(crate) fn check_count(query: &str, given: usize) -> Result<()> {
    let used = sql::max_placeholder(query)?;
    if used != given {
        return Err(Error::parameter(format!(
            "the query uses placeholders up to ${used} but {given} parameter{} given",
            if given == 1 { " was" } else { "s were" }
        )));
    }
    Ok(())
}

/// A query being rendered: the literals known so far, and the conversions still needed from the
/// server.
pub(crate) struct Rendering<'q> {
    query: &'q str,
    slots: Vec<Slot>,
    /// Which value to convert to text, bound as which type.
    conversions: Vec<(usize, Type)>,
}

/// One parameter's rendering.
enum Slot {
    Done(String),
    /// At least one candidate waits for the server's text.
    Pending {
        index: usize,
        candidates: Vec<Candidate>,
        /// Why the value decides its type (`None`: the statement's type decided).
        inferred: Option<Unknown>,
    },
}

struct Candidate {
    ty: Type,
    rendered: Rendered,
}

enum Rendered {
    Literal(Literal),
    /// The server's text of conversion number `k`.
    Remote(usize),
}

/// A literal: its text (compared between candidates) and the cast written after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    text: String,
    cast: Option<String>,
}

impl Literal {
    fn bare(text: String) -> Literal {
        Literal { text, cast: None }
    }

    fn null() -> Literal {
        Literal::bare("NULL".to_owned())
    }

    fn into_sql(self) -> String {
        match self.cast {
            Some(cast) => format!("{}::{cast}", self.text),
            None => self.text,
        }
    }
}

/// Why a parameter's type comes from its value.
#[derive(Debug, Clone)]
enum Unknown {
    /// The statement's parameter types are not known.
    NoStatement,
    /// The value does not accept the statement's type for it.
    Rejects(Type),
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unknown::NoStatement => f.write_str(
                "the statement's parameter types are not known (it cannot be prepared, or it is \
                 not prepared yet and the connection is not idle)",
            ),
            Unknown::Rejects(ty) => write!(
                f,
                "the value does not accept the statement's type for it, {}",
                ty.name()
            ),
        }
    }
}

/// Why bytes are not a valid value of a type (the server would reject them when bound).
#[derive(Debug)]
enum Invalid {
    Nul,
    Length { got: usize, want: usize },
    Utf8,
    JsonbVersion(u8),
    Empty,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Nul => f.write_str("it contains a NUL byte"),
            Invalid::Length { got, want } => {
                write!(f, "it encodes to {got} bytes where the type takes {want}")
            }
            Invalid::Utf8 => f.write_str("it encodes to bytes that are not valid UTF-8"),
            Invalid::JsonbVersion(v) => write!(f, "it encodes as jsonb format version {v}"),
            Invalid::Empty => f.write_str("it encodes to no bytes"),
        }
    }
}

/// What rendering a value's bytes as one type gave.
enum Outcome {
    Literal(Literal),
    /// Only the server can say (it is converted from the same bytes).
    Remote,
    Invalid(Error),
}

impl<'q> Rendering<'q> {
    /// Renders what can be rendered without the server.
    ///
    /// `types` are the statement's parameter types when they are known (what `execute` binds);
    /// `None` when the values must decide.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`] when a value cannot be encoded as its type, its bytes are not a
    /// valid value of that type, its type is ambiguous, or `types` has the wrong length.
    pub(crate) fn start(
        query: &'q str,
        values: &[Value<'_>],
        types: Option<&[Type]>,
    ) -> Result<Rendering<'q>> {
        if let Some(types) = types {
            if types.len() != values.len() {
                return Err(Error::parameter(format!(
                    "the statement takes {} parameter{} but {} {} given",
                    types.len(),
                    if types.len() == 1 { "" } else { "s" },
                    values.len(),
                    if values.len() == 1 { "was" } else { "were" },
                )));
            }
        }
        let mut rendering = Rendering {
            query,
            slots: Vec::with_capacity(values.len()),
            conversions: Vec::new(),
        };
        let mut buf = BytesMut::new();
        for (index, value) in values.iter().enumerate() {
            let slot = match types.and_then(|t| t.get(index)) {
                Some(ty) => match rendering.known(index, *value, ty, &mut buf)? {
                    Some(slot) => slot,
                    None => {
                        rendering.infer(index, *value, Unknown::Rejects(ty.clone()), &mut buf)?
                    }
                },
                None => rendering.infer(index, *value, Unknown::NoStatement, &mut buf)?,
            };
            rendering.slots.push(slot);
        }
        Ok(rendering)
    }

    /// The values to convert to text on the server, each bound as the given type: `(index into
    /// the values, type)`, in the order [`finish`](Rendering::finish) expects their texts.
    pub(crate) fn conversions(&self) -> &[(usize, Type)] {
        &self.conversions
    }

    /// The statement converting [`conversions`](Rendering::conversions) to text:
    /// `SELECT $1::text, $2::text, …`, one column per conversion.
    pub(crate) fn conversion_sql(&self) -> String {
        let columns: Vec<String> = (1..=self.conversions.len())
            .map(|k| format!("${k}::text"))
            .collect();
        format!("SELECT {}", columns.join(", "))
    }

    /// The parameters of [`conversion_sql`](Rendering::conversion_sql): each value with the type
    /// it is bound as.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`] when `values` are not the ones the rendering started with.
    pub(crate) fn conversion_params<'v>(
        &self,
        values: &[Value<'v>],
    ) -> Result<Vec<(Value<'v>, Type)>> {
        self.conversions
            .iter()
            .map(|(index, ty)| {
                values
                    .get(*index)
                    .map(|v| (*v, ty.clone()))
                    .ok_or_else(|| Error::parameter("mogrify: fewer values than when it started"))
            })
            .collect()
    }

    /// The error for a conversion the server refused because of a value (`message` is what the
    /// server said): the bytes `execute` would send are not a valid value of their type.
    pub(crate) fn rejected(&self, message: &str) -> Error {
        let which: Vec<String> = self
            .conversions
            .iter()
            .map(|(index, ty)| format!("${} as {}", index + 1, ty.name()))
            .collect();
        match which.as_slice() {
            [one] => Error::parameter(format!(
                "parameter {one}: the server refused its encoding ({message})"
            )),
            _ => Error::parameter(format!(
                "the server refused the encoding of a parameter ({message}); bind parameters \
                 of the conversion, in order: {}",
                which.join(", ")
            )),
        }
    }

    /// Completes the query with the server's `texts`, one per
    /// [`conversion`](Rendering::conversions) in order (`None` for SQL NULL).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`] when a value's type is ambiguous after all, or a text cannot be
    /// quoted; [`ErrorKind::Protocol`] when `texts` does not match the conversions.
    pub(crate) fn finish(self, texts: Vec<Option<String>>) -> Result<String> {
        if texts.len() != self.conversions.len() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "mogrify: the server converted {} values, {} were asked",
                    texts.len(),
                    self.conversions.len()
                ),
            ));
        }
        let mut literals = Vec::with_capacity(self.slots.len());
        for slot in self.slots {
            let (index, candidates, inferred) = match slot {
                Slot::Done(literal) => {
                    literals.push(literal);
                    continue;
                }
                Slot::Pending {
                    index,
                    candidates,
                    inferred,
                } => (index, candidates, inferred),
            };
            let mut resolved: Vec<(Type, Literal)> = Vec::with_capacity(candidates.len());
            for Candidate { ty, rendered } in candidates {
                let literal = match rendered {
                    Rendered::Literal(l) => l,
                    Rendered::Remote(k) => match texts.get(k).and_then(Option::as_deref) {
                        None => Literal::null(),
                        Some(text) => Literal {
                            text: server_text(index, text)?,
                            cast: Some(type_name(&ty)?),
                        },
                    },
                };
                resolved.push((ty, literal));
            }
            if let Some(why) = inferred {
                if let Some(e) = disagreement(index, &resolved, &why) {
                    return Err(e);
                }
            }
            let first = resolved.into_iter().next().map(|(_, l)| l.into_sql());
            literals.push(first.ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "mogrify: a parameter without a rendering",
                )
            })?);
        }
        Ok(sql::substitute(self.query, &literals)?)
    }

    /// Renders value `index` as the statement's type `ty`, exactly the bytes `execute` binds.
    /// `None` when the value does not accept `ty` at all.
    fn known(
        &mut self,
        index: usize,
        value: Value<'_>,
        ty: &Type,
        buf: &mut BytesMut,
    ) -> Result<Option<Slot>> {
        buf.clear();
        match value.to_sql_checked(ty, buf) {
            Err(e) if e.is::<WrongType>() => Ok(None),
            Err(e) => Err(cannot_send(index, ty, &e)),
            Ok(IsNull::Yes) => Ok(Some(Slot::Done("NULL".to_owned()))),
            Ok(IsNull::No) => match outcome(index, ty, buf) {
                Outcome::Literal(l) => Ok(Some(Slot::Done(l.into_sql()))),
                Outcome::Invalid(e) => Err(e),
                Outcome::Remote => Ok(Some(Slot::Pending {
                    index,
                    candidates: vec![self.remote(index, ty)],
                    inferred: None,
                })),
            },
        }
    }

    /// Renders value `index` as every candidate type it accepts; they must agree.
    fn infer(
        &mut self,
        index: usize,
        value: Value<'_>,
        why: Unknown,
        buf: &mut BytesMut,
    ) -> Result<Slot> {
        let mut tried: Vec<(Type, Outcome)> = Vec::new();
        // Text types render alike from equal bytes: a long text is rendered once, not per type.
        let mut text_bytes: Option<Vec<u8>> = None;
        for ty in CANDIDATES {
            buf.clear();
            let outcome = match value.to_sql_checked(ty, buf) {
                Err(e) if e.is::<WrongType>() => continue,
                Err(e) => Outcome::Invalid(cannot_send(index, ty, &e)),
                Ok(IsNull::Yes) => Outcome::Literal(Literal::null()),
                Ok(IsNull::No) if is_text(ty) => {
                    if text_bytes.as_deref() == Some(&buf[..]) {
                        continue;
                    }
                    text_bytes = Some(buf.to_vec());
                    outcome(index, ty, buf)
                }
                Ok(IsNull::No) => outcome(index, ty, buf),
            };
            tried.push((ty.clone(), outcome));
        }

        let valid = tried
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Invalid(_)))
            .count();
        if tried.is_empty() {
            return Err(Error::parameter(format!(
                "cannot tell the SQL type of parameter ${} for mogrify: {why}, and the value is not \
                 a bool, integer, float, text, bytea, JSON, timestamp, UUID or an array of those; \
                 cast the placeholder (for example `${}::text`) in a statement that can be \
                 prepared",
                index + 1,
                index + 1
            )));
        }
        if valid == 0 {
            // Every type it accepts refuses its bytes: the first refusal says why.
            if let Some((_, Outcome::Invalid(e))) = tried.into_iter().next() {
                return Err(e);
            }
            return Err(Error::parameter(format!(
                "parameter ${} is invalid",
                index + 1
            )));
        }
        let mut local_texts = tried.iter().filter_map(|(_, o)| match o {
            Outcome::Literal(l) => Some(&l.text),
            _ => None,
        });
        let first_text = local_texts.next();
        if valid < tried.len() || local_texts.any(|t| Some(t) != first_text) {
            let types: Vec<Type> = tried.iter().map(|(ty, _)| ty.clone()).collect();
            return Err(ambiguous(index, &types, &why));
        }

        let mut candidates = Vec::with_capacity(tried.len());
        for (ty, outcome) in tried {
            let rendered = match outcome {
                Outcome::Literal(l) => Rendered::Literal(l),
                Outcome::Remote => self.remote(index, &ty).rendered,
                Outcome::Invalid(e) => return Err(e),
            };
            candidates.push(Candidate { ty, rendered });
        }
        if candidates
            .iter()
            .all(|c| matches!(c.rendered, Rendered::Literal(_)))
        {
            if let Some(Candidate {
                rendered: Rendered::Literal(l),
                ..
            }) = candidates.into_iter().next()
            {
                return Ok(Slot::Done(l.into_sql()));
            }
            return Err(Error::parameter(format!(
                "parameter ${} is invalid",
                index + 1
            )));
        }
        Ok(Slot::Pending {
            index,
            candidates,
            inferred: Some(why),
        })
    }

    /// Asks for value `index` bound as `ty` to be converted by the server.
    fn remote(&mut self, index: usize, ty: &Type) -> Candidate {
        self.conversions.push((index, ty.clone()));
        Candidate {
            ty: ty.clone(),
            rendered: Rendered::Remote(self.conversions.len() - 1),
        }
    }
}

/// Whether candidates that were all valid rendered the same value; the error if not.
fn disagreement(index: usize, resolved: &[(Type, Literal)], why: &Unknown) -> Option<Error> {
    let first = resolved.first().map(|(_, l)| &l.text);
    if resolved.iter().all(|(_, l)| Some(&l.text) == first) {
        return None;
    }
    let types: Vec<Type> = resolved.iter().map(|(ty, _)| ty.clone()).collect();
    Some(ambiguous(index, &types, why))
}

fn ambiguous(index: usize, types: &[Type], why: &Unknown) -> Error {
    let names: Vec<&str> = types.iter().map(Type::name).collect();
    Error::parameter(format!(
        "the SQL type of parameter ${n} is ambiguous for mogrify: {why}, and the value accepts \
         several SQL types ({}) that read back as different values; cast the placeholder (for \
         example `${n}::text`) in a statement that can be prepared, or pass a value of a concrete \
         Rust type",
        names.join(", "),
        n = index + 1,
    ))
}

fn cannot_send(index: usize, ty: &Type, e: &dyn fmt::Display) -> Error {
    Error::parameter(format!(
        "parameter ${} cannot be sent as {}: {e}",
        index + 1,
        ty.name()
    ))
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// Renders the bytes of value `index` as `ty`: locally for the types whose binary form is read
/// here exactly as the server reads it, [`Outcome::Remote`] for the rest.
fn outcome(index: usize, ty: &Type, bin: &[u8]) -> Outcome {
    match local_literal(ty, bin) {
        Ok(Some(literal)) => Outcome::Literal(literal),
        Ok(None) => Outcome::Remote,
        Err(Invalid::Nul) => Outcome::Invalid(Error::parameter(format!(
            "parameter ${} contains a NUL byte, which PostgreSQL text cannot store",
            index + 1
        ))),
        Err(why) => Outcome::Invalid(Error::parameter(format!(
            "parameter ${} is not a valid {} value: {why} (execute would send the same bytes, \
             and the server would reject them)",
            index + 1,
            ty.name()
        ))),
    }
}

/// The literal for binary value `bin` of type `ty`, checked as strictly as the server's receive
/// function checks it; `None` for types left to the server.
fn local_literal(ty: &Type, bin: &[u8]) -> std::result::Result<Option<Literal>, Invalid> {
    // Quoted for either setting of `standard_conforming_strings` (bytea's `\x` included).
    let quote = |s: &str| sql::quote_literal(s).map_err(|_| Invalid::Nul);
    let text = |bin: &[u8]| quote(std::str::from_utf8(bin).map_err(|_| Invalid::Utf8)?);
    let typed = |text: String, cast: &str| Literal {
        text,
        cast: Some(cast.to_owned()),
    };
    let literal = match *ty {
        // The server takes exactly one byte, and any non-zero byte is true.
        Type::BOOL => {
            let [b] = fixed::<1>(bin)?;
            Literal::bare(if b != 0 { "true" } else { "false" }.to_owned())
        }
        Type::INT2 => number(i16::from_be_bytes(fixed(bin)?)),
        Type::INT4 => number(i32::from_be_bytes(fixed(bin)?)),
        Type::INT8 => number(i64::from_be_bytes(fixed(bin)?)),
        Type::OID => number(u32::from_be_bytes(fixed(bin)?)),
        Type::FLOAT4 => {
            let v = f32::from_be_bytes(fixed(bin)?);
            typed(
                quote(&float_text(f64::from(v), format!("{v:?}")))?,
                "float4",
            )
        }
        Type::FLOAT8 => {
            let v = f64::from_be_bytes(fixed(bin)?);
            typed(quote(&float_text(v, format!("{v:?}")))?, "float8")
        }
        // A longer name is refused by the server when bound (the limit depends on its build),
        // whereas a literal would be truncated: let the server judge it.
        Type::NAME if bin.len() > NAME_MAX_BYTES => return Ok(None),
        // Text goes untyped, like psycopg2's strings, so it fits any context.
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            Literal::bare(text(bin)?)
        }
        Type::BYTEA => {
            let mut hex = String::with_capacity(2 + 2 * bin.len());
            hex.push_str("\\x");
            for b in bin {
                hex.push(hex_digit(b >> 4));
                hex.push(hex_digit(b & 0x0f));
            }
            typed(quote(&hex)?, "bytea")
        }
        // The server parses the same text whether it arrives bound or as a literal, so an
        // invalid document fails the same way in both.
        Type::JSON => typed(text(bin)?, "json"),
        // Format version 1 is the only one the server reads.
        Type::JSONB => match bin.split_first() {
            Some((1, body)) => typed(text(body)?, "jsonb"),
            Some((version, _)) => return Err(Invalid::JsonbVersion(*version)),
            None => return Err(Invalid::Empty),
        },
        _ => return Ok(None),
    };
    Ok(Some(literal))
}

/// `bin` as exactly `N` bytes (the server rejects more or fewer).
fn fixed<const N: usize>(bin: &[u8]) -> std::result::Result<[u8; N], Invalid> {
    bin.try_into().map_err(|_| Invalid::Length {
        got: bin.len(),
        want: N,
    })
}

/// A number as a bare literal; parentheses keep a negative one a single token whatever
/// surrounds the placeholder.
fn number(v: impl fmt::Display) -> Literal {
    let s = v.to_string();
    Literal::bare(if s.starts_with('-') {
        format!("({s})")
    } else {
        s
    })
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// Quotes text the server sent for value `index`.
fn server_text(index: usize, text: &str) -> Result<String> {
    sql::quote_literal(text).map_err(|e| match e {
        SqlTextError::NulInText => Error::parameter(format!(
            "parameter ${} converts to text with a NUL byte",
            index + 1
        )),
        other => Error::from(other),
    })
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
///
/// `char` and `bit` are quoted even though they are builtin: bare, SQL reads them as
/// `character(1)` and `bit(1)`, which would truncate or refuse the value.
fn type_name(ty: &Type) -> Result<String> {
    let name = ty.name();
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ty.schema() == "pg_catalog" && plain {
        if matches!(name, "char" | "bit") {
            return Ok(sql::quote_identifier(name)?);
        }
        return Ok(name.to_owned());
    }
    Ok(format!(
        "{}.{}",
        sql::quote_identifier(ty.schema())?,
        sql::quote_identifier(name)?
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use tokio_postgres::types::to_sql_checked;

    /// A value that claims every SQL type and writes its string's bytes whatever the type: the
    /// kind of value a guess from `accepts` gets wrong.
    #[derive(Debug)]
    struct Permissive(&'static str);

    impl ToSql for Permissive {
        fn to_sql(
            &self,
            _: &Type,
            out: &mut BytesMut,
        ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            out.extend_from_slice(self.0.as_bytes());
            Ok(IsNull::No)
        }

        fn accepts(_: &Type) -> bool {
            true
        }

        to_sql_checked!();
    }

    /// Renders without the server; panics when a conversion is needed.
    fn render(query: &str, values: &[Value<'_>], types: Option<&[Type]>) -> Result<String> {
        let r = Rendering::start(query, values, types)?;
        assert!(
            r.conversions().is_empty(),
            "unexpected conversions: {:?}",
            r.conversions()
        );
        r.finish(Vec::new())
    }

    fn parameter_error(result: Result<String>) -> String {
        let e = result.expect_err("an error");
        assert_eq!(e.kind(), ErrorKind::Parameter, "{e:?}");
        e.to_string()
    }

    #[test]
    fn permissive_value_renders_as_the_statement_type() {
        let v = Permissive("hello");
        assert_eq!(
            render("SELECT $1::text", &[&v], Some(&[Type::TEXT])).unwrap(),
            "SELECT 'hello'::text"
        );
        assert_eq!(
            render("SELECT $1", &[&v], Some(&[Type::VARCHAR])).unwrap(),
            "SELECT 'hello'"
        );
    }

    #[test]
    fn permissive_value_with_invalid_bytes_is_an_error_not_a_number() {
        let v = Permissive("hello");
        let msg = parameter_error(render("SELECT $1::int4", &[&v], Some(&[Type::INT4])));
        assert!(msg.contains("$1") && msg.contains("int4"), "{msg}");
        assert!(msg.contains("5 bytes"), "{msg}");
        // Four bytes are a valid int4, and exactly what execute binds.
        let v = Permissive("abcd");
        assert_eq!(
            render("SELECT $1::int4", &[&v], Some(&[Type::INT4])).unwrap(),
            format!("SELECT {}::int4", i32::from_be_bytes(*b"abcd"))
        );
        // A bool is exactly one byte.
        let v = Permissive("hello");
        parameter_error(render("SELECT $1::bool", &[&v], Some(&[Type::BOOL])));
        let v = Permissive("");
        parameter_error(render("SELECT $1::bool", &[&v], Some(&[Type::BOOL])));
    }

    #[test]
    fn jsonb_is_format_version_one() {
        let v = Permissive("\u{1}[1]");
        assert_eq!(
            render("SELECT $1", &[&v], Some(&[Type::JSONB])).unwrap(),
            "SELECT '[1]'::jsonb"
        );
        for v in [Permissive("\u{2}[1]"), Permissive("")] {
            let msg = parameter_error(render("SELECT $1", &[&v], Some(&[Type::JSONB])));
            assert!(msg.contains("jsonb"), "{msg}");
        }
    }

    #[test]
    fn permissive_value_without_a_statement_type_is_ambiguous() {
        let v = Permissive("hello");
        let msg = parameter_error(render("FETCH $1 FROM c", &[&v], None));
        assert!(msg.contains("ambiguous"), "{msg}");
        assert!(msg.contains("$1::text"), "{msg}");
    }

    #[test]
    fn plain_values_infer_one_rendering() {
        assert_eq!(
            render("FETCH $1 FROM c", &[&10i32], None).unwrap(),
            "FETCH 10 FROM c"
        );
        assert_eq!(render("SELECT $1", &[&-7i64], None).unwrap(), "SELECT (-7)");
        assert_eq!(
            render("SELECT $1", &[&"it's"], None).unwrap(),
            "SELECT 'it''s'"
        );
        assert_eq!(
            render("SELECT $1", &[&"back\\slash".to_owned()], None).unwrap(),
            "SELECT E'back\\\\slash'"
        );
        assert_eq!(render("SELECT $1", &[&true], None).unwrap(), "SELECT true");
        assert_eq!(
            render("SELECT $1", &[&vec![0u8, 255]], None).unwrap(),
            "SELECT E'\\\\x00ff'::bytea"
        );
        assert_eq!(
            render("SELECT $1", &[&0.5f64], None).unwrap(),
            "SELECT '0.5'::float8"
        );
        assert_eq!(
            render("SELECT $1", &[&None::<String>], None).unwrap(),
            "SELECT NULL"
        );
        // json and jsonb render the same document: not ambiguous.
        let doc = tokio_postgres::types::Json(vec!["it's"]);
        assert_eq!(
            render("SELECT $1", &[&doc], None).unwrap(),
            r#"SELECT '["it''s"]'::json"#
        );
    }

    #[test]
    fn value_rejecting_the_statement_type_is_rendered_from_its_own_type() {
        // `SELECT $1` is prepared with a text parameter, which bytes and integers do not accept:
        // execute refuses them, so their own type decides, as in psycopg2.
        assert_eq!(
            render("SELECT $1", &[&vec![1u8]], Some(&[Type::TEXT])).unwrap(),
            "SELECT E'\\\\x01'::bytea"
        );
        assert_eq!(
            render("SELECT $1", &[&5i32], Some(&[Type::TEXT])).unwrap(),
            "SELECT 5"
        );
        let map: std::collections::HashMap<String, Option<String>> = Default::default();
        let msg = parameter_error(render("SELECT $1", &[&map], Some(&[Type::TEXT])));
        assert!(msg.contains("cannot tell") && msg.contains("text"), "{msg}");
    }

    #[test]
    fn nul_text_is_an_error_known_or_inferred() {
        for types in [Some(&[Type::TEXT][..]), None] {
            let msg = parameter_error(render("SELECT $1", &[&"a\0b"], types));
            assert!(msg.contains("NUL"), "{msg}");
        }
    }

    #[test]
    fn long_names_are_left_to_the_server() {
        let long = "n".repeat(64);
        let r = Rendering::start("SELECT $1", &[&long.as_str()], Some(&[Type::NAME])).unwrap();
        assert_eq!(r.conversions(), &[(0, Type::NAME)]);
        assert_eq!(
            render("SELECT $1", &[&"short"], Some(&[Type::NAME])).unwrap(),
            "SELECT 'short'"
        );
    }

    #[test]
    fn server_conversions_are_cast_and_compared() {
        // A known remote type: one conversion, its text quoted and cast.
        let t = UNIX_EPOCH + Duration::from_secs(1);
        let r = Rendering::start("SELECT $1", &[&t], Some(&[Type::TIMESTAMPTZ])).unwrap();
        assert_eq!(r.conversions(), &[(0, Type::TIMESTAMPTZ)]);
        assert_eq!(r.conversion_sql(), "SELECT $1::text");
        assert_eq!(
            r.finish(vec![Some("1970-01-01 00:00:01+00".to_owned())])
                .unwrap(),
            "SELECT '1970-01-01 00:00:01+00'::timestamptz"
        );

        // SystemTime is bound as timestamptz or timestamp alike; their texts differ.
        let r = Rendering::start("FETCH $1", &[&t], None).unwrap();
        assert_eq!(
            r.conversions(),
            &[(0, Type::TIMESTAMPTZ), (0, Type::TIMESTAMP)]
        );
        assert_eq!(r.conversion_sql(), "SELECT $1::text, $2::text");
        let msg = parameter_error(r.finish(vec![
            Some("1970-01-01 00:00:01+00".to_owned()),
            Some("1970-01-01 00:00:01".to_owned()),
        ]));
        assert!(msg.contains("ambiguous"), "{msg}");
        assert!(msg.contains("timestamptz, timestamp"), "{msg}");
    }

    #[test]
    fn builtin_names_that_mean_something_else_bare_are_quoted() {
        assert_eq!(type_name(&Type::CHAR).unwrap(), "\"char\"");
        assert_eq!(type_name(&Type::BIT).unwrap(), "\"bit\"");
        assert_eq!(type_name(&Type::INT4_ARRAY).unwrap(), "_int4");
        assert_eq!(type_name(&Type::TIMESTAMPTZ).unwrap(), "timestamptz");
        let r = Rendering::start("SELECT $1", &[&-127i8], Some(&[Type::CHAR])).unwrap();
        assert_eq!(
            r.finish(vec![Some("\\201".to_owned())]).unwrap(),
            "SELECT E'\\\\201'::\"char\""
        );
    }

    #[test]
    fn counts_must_match() {
        assert!(check_count("SELECT $1, $2", 1).unwrap_err().is_parameter());
        assert!(check_count("SELECT $1", 2).unwrap_err().is_parameter());
        check_count("SELECT '$3' -- $4", 0).unwrap();
        let e = Rendering::start("SELECT $1", &[&1i32], Some(&[]))
            .err()
            .unwrap();
        assert!(e.is_parameter(), "{e:?}");
    }

    #[test]
    fn rejected_conversions_name_the_parameter() {
        let v = Permissive("hello");
        let r =
            Rendering::start("SELECT $1", &[&1i32, &v], Some(&[Type::INT4, Type::UUID])).unwrap();
        let e = r.rejected("incorrect binary data format in bind parameter 1");
        assert!(e.is_parameter());
        assert!(e.to_string().contains("$2 as uuid"), "{e}");
    }
}
