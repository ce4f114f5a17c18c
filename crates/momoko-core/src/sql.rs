//! Client-side SQL text handling: locating `$n` placeholders, quoting literals and identifiers,
//! substituting quoted values (`mogrify`) and building `callproc` statements.
//!
//! The lexer follows PostgreSQL's own (`scan.l`) closely enough to never mistake text inside a
//! string literal, quoted identifier, dollar-quoted string or comment for a placeholder. Plain
//! `'...'` strings are lexed as with `standard_conforming_strings = on` (the server default);
//! literals produced by [`quote_literal`] read back identically under either setting.

use std::fmt;

/// Error from SQL text handling; `Display` gives a clear, specific message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SqlTextError {
    /// `$n` placeholder with n == 0 or n > number of values supplied.
    PlaceholderOutOfRange {
        /// The placeholder number `n` (saturated at `usize::MAX` if it does not fit).
        placeholder: usize,
        /// How many values were supplied.
        supplied: usize,
    },
    /// An unterminated string literal, quoted identifier, dollar-quoted string or block comment
    /// (placeholders cannot be located reliably).
    Unterminated {
        /// What was left open, e.g. `"string literal"`.
        what: &'static str,
        /// Byte offset in the SQL text where it starts.
        offset: usize,
    },
    /// Invalid procedure name or identifier (empty, empty part, NUL, or otherwise not a valid
    /// identifier chain).
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A text value that PostgreSQL cannot store (contains NUL).
    NulInText,
}

impl fmt::Display for SqlTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlaceholderOutOfRange { placeholder: 0, .. } => {
                f.write_str("placeholder $0 is invalid: placeholders are numbered from $1")
            }
            Self::PlaceholderOutOfRange {
                placeholder,
                supplied,
            } => write!(
                f,
                "placeholder ${placeholder} has no value: {supplied} parameter value(s) supplied"
            ),
            Self::Unterminated { what, offset } => {
                write!(
                    f,
                    "unterminated {what} starting at byte offset {offset} of the query"
                )
            }
            Self::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Self::NulInText => f.write_str(
                "text contains a NUL character (\\0), which PostgreSQL cannot store in text",
            ),
        }
    }
}

impl std::error::Error for SqlTextError {}

/// Every SQL text error is the caller's query or values being wrong: a parameter error, raised
/// before anything is sent.
impl From<SqlTextError> for crate::error::Error {
    fn from(e: SqlTextError) -> crate::error::Error {
        crate::error::Error::parameter(e.to_string())
    }
}

/// True for bytes that may start an unquoted identifier (bytes >= 0x80 count, as in PostgreSQL).
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// True for bytes that may continue an unquoted identifier (which includes `$`).
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// True for bytes that may continue a dollar-quote tag (identifier chars except `$`).
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// True for PostgreSQL operator characters (tokens made of these can merge with each other).
fn is_op_char(b: u8) -> bool {
    b"+-*/<>=~!@#%^&|`?".contains(&b)
}

/// One `$n` placeholder found in SQL code: its byte range and number.
#[derive(Debug, Clone, Copy)]
struct Placeholder {
    /// Byte offset of the `$`.
    start: usize,
    /// Byte offset just past the last digit.
    end: usize,
    /// The number `n` (saturated at `usize::MAX`).
    number: usize,
}

/// Skips a quoted token whose opening quote is at `open`; returns the offset just past it.
/// Doubled quotes are escapes; with `backslash` a backslash escapes the next byte too.
fn skip_quoted(
    b: &[u8],
    open: usize,
    quote: u8,
    backslash: bool,
    what: &'static str,
    offset: usize,
) -> Result<usize, SqlTextError> {
    let mut j = open + 1;
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
        } else if b[j] == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return Ok(j + 1);
            }
        } else {
            j += 1;
        }
    }
    Err(SqlTextError::Unterminated { what, offset })
}

/// Skips a (possibly nested) block comment starting at `open`; returns the offset past it.
fn skip_block_comment(b: &[u8], open: usize) -> Result<usize, SqlTextError> {
    let mut depth = 0usize;
    let mut j = open;
    while j + 1 < b.len() {
        if b[j] == b'/' && b[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Ok(j);
            }
        } else {
            j += 1;
        }
    }
    Err(SqlTextError::Unterminated {
        what: "block comment",
        offset: open,
    })
}

/// If a dollar-quote delimiter (`$$` or `$tag$`) starts at `i`, returns the offset of its
/// closing `$`.
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|&c| is_ident_start(c)) {
        while b.get(j).is_some_and(|&c| is_tag_cont(c)) {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j)
}

/// What lexing a SQL text finds.
struct Scan {
    /// Every placeholder in SQL code, in order of appearance.
    placeholders: Vec<Placeholder>,
    /// Statements with code in them (`;` separates statements; comments and blanks alone do
    /// not make one).
    statements: usize,
}

/// Lexes `sql` and returns every placeholder in SQL code, in order of appearance.
fn scan_placeholders(sql: &str) -> Result<Vec<Placeholder>, SqlTextError> {
    Ok(scan(sql)?.placeholders)
}

/// Whether `sql` holds more than one statement (`SELECT 1; SELECT 2`); a trailing `;` or
/// comment does not count. Text that cannot be lexed counts as one statement (the server then
/// reports what is wrong with it).
pub(crate) fn has_several_statements(sql: &str) -> bool {
    scan(sql).is_ok_and(|s| s.statements > 1)
}

fn scan(sql: &str) -> Result<Scan, SqlTextError> {
    let b = sql.as_bytes();
    let mut found = Vec::new();
    let mut statements = 0;
    // Code seen since the last `;`.
    let mut code = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let comment_or_blank = c.is_ascii_whitespace()
            || c == b';'
            || (c == b'-' && next == Some(b'-'))
            || (c == b'/' && next == Some(b'*'));
        if !comment_or_blank {
            code = true;
        }
        if c == b';' {
            if code {
                statements += 1;
            }
            code = false;
            i += 1;
        } else if c == b'\'' {
            i = skip_quoted(b, i, b'\'', false, "string literal", i)?;
        } else if c == b'"' {
            i = skip_quoted(b, i, b'"', false, "quoted identifier", i)?;
        } else if c == b'-' && next == Some(b'-') {
            while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            i = skip_block_comment(b, i)?;
        } else if c == b'$' && next.is_some_and(|d| d.is_ascii_digit()) {
            let start = i;
            let mut number = 0usize;
            i += 1;
            while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                number = number
                    .saturating_mul(10)
                    .saturating_add(usize::from(d - b'0'));
                i += 1;
            }
            found.push(Placeholder {
                start,
                end: i,
                number,
            });
        } else if c == b'$' {
            match dollar_tag_end(b, i) {
                Some(tag_end) => {
                    let delim = &b[i..=tag_end];
                    let body = tag_end + 1;
                    let close = b[body..]
                        .windows(delim.len())
                        .position(|w| w == delim)
                        .ok_or(SqlTextError::Unterminated {
                            what: "dollar-quoted string",
                            offset: i,
                        })?;
                    i = body + close + delim.len();
                }
                None => i += 1,
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident_cont(b[i]) {
                i += 1;
            }
            // `E'...'` (only when the E is a whole token) is an escape string.
            if i - start == 1 && (c == b'e' || c == b'E') && b.get(i) == Some(&b'\'') {
                i = skip_quoted(b, i, b'\'', true, "escape string literal", start)?;
            }
        } else {
            i += 1;
        }
    }
    if code {
        statements += 1;
    }
    Ok(Scan {
        placeholders: found,
        statements,
    })
}

/// Highest placeholder number used in `sql` (0 if none), skipping everything that is not SQL
/// code: `'...'`, `E'...'`, `U&'...'`, `B'...'`/`X'...'` strings, `"quoted identifiers"`,
/// `$tag$...$tag$` dollar quotes, `--` line comments and nested `/* */` block comments. A `$`
/// directly after an identifier character (as in `a$1`) belongs to the identifier. `$0` is not
/// an error here (it counts as 0); [`substitute`] rejects it.
pub(crate) fn max_placeholder(sql: &str) -> Result<usize, SqlTextError> {
    Ok(scan_placeholders(sql)?
        .iter()
        .map(|p| p.number)
        .max()
        .unwrap_or(0))
}

/// Replaces every placeholder `$n` in SQL code (see [`max_placeholder`]) by `values[n-1]`
/// verbatim; the same placeholder may appear several times. Values are expected to be
/// complete literals (as made by [`quote_literal`]) and are never re-scanned. A space is added
/// before or after a value where it would otherwise merge with the neighbouring token (an
/// identifier/number/quote character, or an operator character next to an operator
/// character such as `-` + `-5`), so token boundaries are kept.
///
/// Errors: [`SqlTextError::PlaceholderOutOfRange`] if any `n` is 0 or greater than
/// `values.len()`, [`SqlTextError::Unterminated`] if the SQL text cannot be lexed.
pub(crate) fn substitute(sql: &str, values: &[String]) -> Result<String, SqlTextError> {
    let placeholders = scan_placeholders(sql)?;
    let b = sql.as_bytes();
    let merges = |x: u8, y: u8| {
        let wordish = |c: u8| is_ident_cont(c) || c == b'\'' || c == b'"';
        (wordish(x) && wordish(y)) || (is_op_char(x) && is_op_char(y))
    };
    let mut out = String::with_capacity(sql.len() + values.iter().map(String::len).sum::<usize>());
    let mut copied = 0;
    for p in placeholders {
        let value = p
            .number
            .checked_sub(1)
            .and_then(|idx| values.get(idx))
            .ok_or(SqlTextError::PlaceholderOutOfRange {
                placeholder: p.number,
                supplied: values.len(),
            })?;
        out.push_str(&sql[copied..p.start]);
        let prev = out.as_bytes().last().copied();
        let next = b.get(p.end).copied();
        match (value.as_bytes().first(), value.as_bytes().last()) {
            (Some(&first), Some(&last)) => {
                if prev.is_some_and(|x| merges(x, first)) {
                    out.push(' ');
                }
                out.push_str(value);
                if next.is_some_and(|y| merges(last, y)) {
                    out.push(' ');
                }
            }
            // An empty value must not glue its neighbours together.
            _ => out.push(' '),
        }
        copied = p.end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// A SQL string literal that PostgreSQL reads back as exactly `text` under both settings of
/// `standard_conforming_strings`: `'...'` with `'` doubled if `text` has no backslash,
/// otherwise `E'...'` with `\` and `'` doubled. Any other Unicode passes through unchanged
/// (the connection encoding is UTF8). Errors with [`SqlTextError::NulInText`] on `'\0'`.
pub(crate) fn quote_literal(text: &str) -> Result<String, SqlTextError> {
    if text.contains('\0') {
        return Err(SqlTextError::NulInText);
    }
    let escape = text.contains('\\');
    let mut out = String::with_capacity(text.len() + 3);
    if escape {
        out.push('E');
    }
    out.push('\'');
    for ch in text.chars() {
        if ch == '\'' || (escape && ch == '\\') {
            out.push(ch);
        }
        out.push(ch);
    }
    out.push('\'');
    Ok(out)
}

/// A quoted identifier `"..."` with embedded `"` doubled (always quoted, so case and keywords
/// are preserved). Errors with [`SqlTextError::InvalidName`] if `ident` is empty (PostgreSQL
/// rejects zero-length identifiers) or contains NUL.
pub(crate) fn quote_identifier(ident: &str) -> Result<String, SqlTextError> {
    let invalid = |reason| SqlTextError::InvalidName {
        name: ident.to_owned(),
        reason,
    };
    if ident.is_empty() {
        return Err(invalid("an identifier cannot be empty"));
    }
    if ident.contains('\0') {
        return Err(invalid("an identifier cannot contain a NUL character"));
    }
    Ok(format!("\"{}\"", ident.replace('"', "\"\"")))
}

/// Renders a procedure name given by a user (`my_func`, `public.my_func`, `"Weird Name"`,
/// `"sch"."fn"`, `MyFunc`) as a safe qualified name for `SELECT * FROM <name>(...)`.
///
/// The name is split on `.` outside double quotes into 1 to 3 parts. A quoted part is kept
/// as written (it must be terminated, non-empty and free of NUL); an unquoted part must match
/// `[A-Za-z_][A-Za-z0-9_$]*` and is folded to lower case as PostgreSQL does. Every part is
/// emitted with [`quote_identifier`]. Anything else (whitespace, parentheses, semicolons,
/// comments, empty parts) is rejected with [`SqlTextError::InvalidName`].
pub(crate) fn procedure_name(name: &str) -> Result<String, SqlTextError> {
    let invalid = |reason| SqlTextError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let b = name.as_bytes();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    loop {
        let part = if b.get(i) == Some(&b'"') {
            let end = skip_quoted(b, i, b'"', false, "quoted identifier", i)
                .map_err(|_| invalid("unterminated quoted identifier"))?;
            let inner = name[i + 1..end - 1].replace("\"\"", "\"");
            if inner.is_empty() {
                return Err(invalid("a quoted identifier cannot be empty"));
            }
            i = end;
            inner
        } else {
            let start = i;
            match b.get(i) {
                None | Some(b'.') => return Err(invalid("empty name part")),
                Some(c) if !(c.is_ascii_alphabetic() || *c == b'_') => {
                    return Err(invalid(
                        "an unquoted name part must start with a letter or underscore \
                         (quote it with double quotes otherwise)",
                    ))
                }
                Some(_) => {}
            }
            while b
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
            {
                i += 1;
            }
            name[start..i].to_ascii_lowercase()
        };
        parts.push(quote_identifier(&part).map_err(|_| invalid("contains a NUL character"))?);
        match b.get(i) {
            None => break,
            Some(b'.') => i += 1,
            Some(_) => {
                return Err(invalid(
                    "unexpected character; a name is 1 to 3 identifiers separated by '.' \
                     (quote other characters with double quotes)",
                ))
            }
        }
        if parts.len() == 3 {
            return Err(invalid("too many parts; at most catalog.schema.function"));
        }
    }
    Ok(parts.join("."))
}

/// Builds `SELECT * FROM <procedure_name(name)>($1, $2, ..., $n)` for `n_params` parameters.
pub(crate) fn callproc_sql(name: &str, n_params: usize) -> Result<String, SqlTextError> {
    let args: Vec<String> = (1..=n_params).map(|n| format!("${n}")).collect();
    Ok(format!(
        "SELECT * FROM {}({})",
        procedure_name(name)?,
        args.join(", ")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn max(sql: &str) -> usize {
        max_placeholder(sql).unwrap()
    }

    fn sub(sql: &str, values: &[&str]) -> Result<String, SqlTextError> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        substitute(sql, &values)
    }

    /// Independent mini-lexer: removes `'..'`/`E'..'` string literals from the text, asserting
    /// they are terminated, and returns the remaining code with each literal replaced by `S`.
    fn code_without_literals(sql: &str) -> String {
        let chars: Vec<char> = sql.chars().collect();
        let mut code = String::new();
        let mut i = 0;
        while i < chars.len() {
            let esc = (chars[i] == 'E' || chars[i] == 'e') && chars.get(i + 1) == Some(&'\'');
            if chars[i] == '\'' || esc {
                i += if esc { 2 } else { 1 };
                loop {
                    assert!(i < chars.len(), "unterminated literal in {sql:?}");
                    let doubled = chars[i] == '\'' && chars.get(i + 1) == Some(&'\'');
                    if doubled || (esc && chars[i] == '\\') {
                        i += 2;
                    } else if chars[i] == '\'' {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                code.push('S');
            } else {
                code.push(chars[i]);
                i += 1;
            }
        }
        code
    }

    #[test]
    fn finds_placeholders_in_code() {
        assert_eq!(max("SELECT 1"), 0);
        assert_eq!(max("SELECT $1"), 1);
        assert_eq!(max("SELECT $1::int, ($2), $1 + $3"), 3);
        assert_eq!(max("SELECT f($12)"), 12);
        assert_eq!(max("SELECT 1$2"), 2);
        assert_eq!(max("SELECT $1-$2"), 2);
        assert_eq!(max("SELECT '5'$1"), 1);
        assert_eq!(max("$1"), 1);
    }

    #[test]
    fn ignores_placeholders_outside_code() {
        assert_eq!(max("SELECT '$1', 'it''s $2'"), 0);
        assert_eq!(max(r"SELECT E'\'$1', e'$2\\', E'''$3'"), 0);
        assert_eq!(max(r"SELECT E'\'', $1"), 1);
        assert_eq!(max("SELECT U&'$1', B'$2', X'$3', N'$4'"), 0);
        assert_eq!(max(r#"SELECT "$1", "a""$2", U&"$3""#), 0);
        assert_eq!(max("SELECT $$ $1 $$, $tag$ $2 $$ $3 $tag$, $4"), 4);
        assert_eq!(max("SELECT $a$ $$ $1 $a$"), 0);
        assert_eq!(max("SELECT $_x9$ $1 $_x9$"), 0);
        assert_eq!(max("SELECT 1 -- $1\n, $2 -- $3"), 2);
        assert_eq!(max("SELECT 1 -- $9\r$2"), 2);
        assert_eq!(max("SELECT /* $1 /* $2 */ $3 */ $4"), 4);
        assert_eq!(max("SELECT a$1, b$$2, é$3, $2"), 2);
        // A backslash in a standard string does not escape the quote.
        assert_eq!(max(r"SELECT '\', $1"), 1);
        // `xE'..'` is identifier `xE` then a standard string.
        assert_eq!(max(r"SELECT xE'\', $1"), 1);
    }

    #[test]
    fn dollar_edge_cases() {
        // `$a$1 ...` opens a dollar quote with tag `a`.
        assert_eq!(max("SELECT $a$1 $a$, $2"), 2);
        assert!(matches!(
            max_placeholder("SELECT $a$1"),
            Err(SqlTextError::Unterminated {
                what: "dollar-quoted string",
                offset: 7
            })
        ));
        // `$a` not followed by `$` is not a dollar quote; `$` alone is harmless.
        assert_eq!(max("SELECT $a + $1, $ $2"), 2);
        // A tag cannot start with a digit, so `$1$` is placeholder 1 then `$`.
        assert_eq!(max("SELECT $1$"), 1);
        assert_eq!(max("SELECT $99999999999999999999999999"), usize::MAX);
    }

    #[test]
    fn unterminated_is_error() {
        let cases = [
            ("SELECT 'abc", "string literal", 7),
            ("SELECT 'abc''", "string literal", 7),
            (r"SELECT E'abc\'", "escape string literal", 7),
            (r"SELECT E'abc\", "escape string literal", 7),
            (r#"SELECT "abc"#, "quoted identifier", 7),
            ("SELECT $$abc$", "dollar-quoted string", 7),
            ("SELECT $t$abc$T$", "dollar-quoted string", 7),
            ("SELECT /* /* */", "block comment", 7),
            ("SELECT /*/", "block comment", 7),
        ];
        for (sql, what, offset) in cases {
            assert_eq!(
                max_placeholder(sql),
                Err(SqlTextError::Unterminated { what, offset }),
                "{sql}"
            );
            assert!(substitute(sql, &[]).is_err());
        }
        assert_eq!(max("SELECT 1 -- no newline"), 0);
    }

    #[test]
    fn substitutes_values() {
        assert_eq!(sub("SELECT $1::int", &["'5'"]).unwrap(), "SELECT '5'::int");
        assert_eq!(
            sub("SELECT ($1, $2, $1)", &["'a'", "'b'"]).unwrap(),
            "SELECT ('a', 'b', 'a')"
        );
        assert_eq!(
            sub("SELECT '$1', $1 /* $2 */ -- $2", &["'x'"]).unwrap(),
            "SELECT '$1', 'x' /* $2 */ -- $2"
        );
        assert_eq!(
            sub("SELECT $1$$ $1 $$", &["'x'"]).unwrap(),
            "SELECT 'x' $$ $1 $$"
        );
        assert_eq!(sub("SELECT 1", &[]).unwrap(), "SELECT 1");
        // Values are not re-scanned.
        assert_eq!(
            sub("SELECT $1, $2", &["'$2'", "'b'"]).unwrap(),
            "SELECT '$2', 'b'"
        );
        assert_eq!(sub("SELECT é$1, $1", &["'x'"]).unwrap(), "SELECT é$1, 'x'");
    }

    #[test]
    fn substitution_keeps_token_boundaries() {
        assert_eq!(sub("SELECT 1-$1", &["-5"]).unwrap(), "SELECT 1- -5");
        assert_eq!(sub("SELECT 2$1", &["'x'"]).unwrap(), "SELECT 2 'x'");
        assert_eq!(sub("SELECT '5'$1", &["'x'"]).unwrap(), "SELECT '5' 'x'");
        assert_eq!(sub("SELECT $1abc", &["'x'"]).unwrap(), "SELECT 'x' abc");
        assert_eq!(sub("SELECT $1 -$2", &["1", "-1"]).unwrap(), "SELECT 1 - -1");
        assert_eq!(sub("SELECT -$1-", &[""]).unwrap(), "SELECT - -");
        assert_eq!(sub("SELECT 1$1", &[r"E'\\'"]).unwrap(), r"SELECT 1 E'\\'");
    }

    #[test]
    fn out_of_range_is_error() {
        assert_eq!(
            sub("SELECT $2", &["'a'"]),
            Err(SqlTextError::PlaceholderOutOfRange {
                placeholder: 2,
                supplied: 1
            })
        );
        assert_eq!(
            sub("SELECT $0", &["'a'"]),
            Err(SqlTextError::PlaceholderOutOfRange {
                placeholder: 0,
                supplied: 1
            })
        );
        assert_eq!(
            sub("SELECT $1", &[]),
            Err(SqlTextError::PlaceholderOutOfRange {
                placeholder: 1,
                supplied: 0
            })
        );
        assert!(sub("SELECT $99999999999999999999999999", &["'a'"]).is_err());
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("").unwrap(), "''");
        assert_eq!(quote_literal("abc").unwrap(), "'abc'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal(r"a\b").unwrap(), r"E'a\\b'");
        assert_eq!(quote_literal(r"\'").unwrap(), r"E'\\'''");
        assert_eq!(
            quote_literal("żółw 🐢 \"x\" $1\n").unwrap(),
            "'żółw 🐢 \"x\" $1\n'"
        );
        assert_eq!(quote_literal("a\0b"), Err(SqlTextError::NulInText));
    }

    #[test]
    fn injection_attempts_stay_single_literals() {
        let hostile = [
            "'; DROP TABLE x; --",
            r"\'; DROP TABLE x; --",
            r"\\'; DROP TABLE x; --",
            "''; DROP TABLE x; /*",
            "$1; DROP TABLE x; $$",
            "\"; DROP TABLE x; --",
            r"\",
            "'",
        ];
        for text in hostile {
            let literal = quote_literal(text).unwrap();
            for sql in [
                "SELECT $1",
                "SELECT a=$1",
                "SELECT 1$1",
                "SELECT x-$1-$1",
                "SELECT $1a",
            ] {
                let out = substitute(sql, std::slice::from_ref(&literal)).unwrap();
                assert_eq!(max_placeholder(&out), Ok(0), "{out}");
                let code = code_without_literals(&out);
                assert!(!code.contains(';'), "{out}");
                assert!(!code.contains("--") && !code.contains("/*"), "{out}");
                assert_eq!(
                    code.matches('S').count(),
                    sql.matches("$1").count() + 1,
                    "{out}"
                );
            }
        }
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_identifier("abc").unwrap(), "\"abc\"");
        assert_eq!(quote_identifier("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier("a\0").is_err());
    }

    #[test]
    fn procedure_names() {
        let ok = [
            ("my_func", "\"my_func\""),
            ("MyFunc", "\"myfunc\""),
            ("public.my_func", "\"public\".\"my_func\""),
            ("\"Weird Name\"", "\"Weird Name\""),
            ("\"sch\".\"fn\"", "\"sch\".\"fn\""),
            ("\"a\"\"b\".F$1", "\"a\"\"b\".\"f$1\""),
            ("cat.sch.fn", "\"cat\".\"sch\".\"fn\""),
            ("_f", "\"_f\""),
            ("\"f(); drop table x\"", "\"f(); drop table x\""),
        ];
        for (name, want) in ok {
            assert_eq!(procedure_name(name).unwrap(), want, "{name}");
        }
        let bad = [
            "f(); drop table x",
            "a..b",
            "",
            "f--",
            "f /*x*/",
            " f",
            "f ",
            "a.",
            ".a",
            "1f",
            "$1",
            "a.b.c.d",
            "\"\"",
            "\"abc",
            "\"a\"b",
            "a\0",
            "\"a\0\"",
            "f;",
            "é",
        ];
        for name in bad {
            assert!(
                matches!(procedure_name(name), Err(SqlTextError::InvalidName { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn builds_callproc_sql() {
        assert_eq!(callproc_sql("f", 0).unwrap(), "SELECT * FROM \"f\"()");
        assert_eq!(
            callproc_sql("Public.F", 3).unwrap(),
            "SELECT * FROM \"public\".\"f\"($1, $2, $3)"
        );
        assert_eq!(max_placeholder(&callproc_sql("f", 3).unwrap()), Ok(3));
        assert!(callproc_sql("f; x", 1).is_err());
    }

    #[test]
    fn error_messages() {
        let e = SqlTextError::PlaceholderOutOfRange {
            placeholder: 3,
            supplied: 2,
        };
        assert_eq!(
            e.to_string(),
            "placeholder $3 has no value: 2 parameter value(s) supplied"
        );
        let e = SqlTextError::PlaceholderOutOfRange {
            placeholder: 0,
            supplied: 2,
        };
        assert!(e.to_string().contains("$0"));
        let e = SqlTextError::Unterminated {
            what: "block comment",
            offset: 4,
        };
        assert_eq!(
            e.to_string(),
            "unterminated block comment starting at byte offset 4 of the query"
        );
        assert!(procedure_name("a..b")
            .unwrap_err()
            .to_string()
            .contains("\"a..b\""));
        assert!(SqlTextError::NulInText.to_string().contains("NUL"));
    }

    #[test]
    fn statements_are_counted_outside_quotes_and_comments() {
        assert!(!has_several_statements("SELECT 1"));
        assert!(!has_several_statements("SELECT 1;"));
        assert!(!has_several_statements("SELECT 1; -- done"));
        assert!(!has_several_statements("SELECT 1; /* a; b */ ;"));
        assert!(!has_several_statements("SELECT ';' || $$;$$ AS \";\""));
        assert!(has_several_statements(
            "CREATE TABLE t (n int); INSERT INTO t VALUES (1)"
        ));
        assert!(has_several_statements("SET a = 1;SELECT 2"));
        assert!(!has_several_statements("SELECT 'unterminated; SELECT 2"));
    }
}
