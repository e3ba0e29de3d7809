//! The text form of a vector: `[1,2.5,-3e-2]`.
//!
//! [`parse`] accepts what pgvector accepts (whitespace around brackets and elements) and
//! reports every malformed input as a [`ParseError`]; it never panics on any byte string.
//! [`format`] writes each element in the shortest form that reads back to the same `f32`.

use std::fmt::Write;

use crate::MAX_DIM;

/// Why a text could not be read as a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not of the form `[x,y,...]`; the message says what was wrong.
    Malformed(String),
    /// `[]`: a vector needs at least one dimension.
    Empty,
    /// More than [`MAX_DIM`] elements.
    TooManyDimensions,
    /// An element outside the range of a 4-byte float.
    OutOfRange(String),
    /// An element written as NaN or infinity; the field says which.
    NotFinite(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Malformed(m) => f.write_str(m),
            ParseError::Empty => f.write_str("vector must have at least 1 dimension"),
            ParseError::TooManyDimensions => {
                write!(f, "vector cannot have more than {MAX_DIM} dimensions")
            }
            ParseError::OutOfRange(e) => write!(f, "\"{e}\" is out of range for type vector"),
            ParseError::NotFinite(what) => write!(f, "{what} not allowed in vector"),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

/// Parses `[x,y,...]` into floats.
pub fn parse(input: &str) -> Result<Vec<f32>, ParseError> {
    let malformed =
        |detail: &str| ParseError::Malformed(format!("invalid input syntax for type vector: \"{input}\"{detail}"));
    let s = trim(input);
    let inner = s
        .strip_prefix('[')
        .ok_or_else(|| malformed(" (a vector must start with \"[\")"))?
        .strip_suffix(']')
        .ok_or_else(|| malformed(" (a vector must end with \"]\")"))?;
    if trim(inner).is_empty() {
        return Err(ParseError::Empty);
    }
    let mut out = Vec::with_capacity(inner.len() / 2 + 1);
    for element in inner.split(',') {
        let e = trim(element);
        if e.is_empty() {
            return Err(malformed(" (empty element)"));
        }
        if out.len() == MAX_DIM {
            return Err(ParseError::TooManyDimensions);
        }
        out.push(parse_element(e).map_err(|err| match err {
            ElementError::Syntax => malformed(""),
            ElementError::Range => ParseError::OutOfRange(e.to_string()),
            ElementError::NotFinite(what) => ParseError::NotFinite(what),
        })?);
    }
    Ok(out)
}

enum ElementError {
    Syntax,
    Range,
    NotFinite(&'static str),
}

/// One element: a decimal number in plain or exponent form. Words such as `inf` or `NaN`,
/// which Rust's float parser would take, are refused here.
fn parse_element(e: &str) -> Result<f32, ElementError> {
    // One pass over the bytes: only digits, signs, points and exponents, and a digit.
    let (mut ok_chars, mut digit) = (true, false);
    for b in e.bytes() {
        digit |= b.is_ascii_digit();
        ok_chars &= b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
    }
    if !ok_chars || !digit {
        let word = e.trim_start_matches(['+', '-']);
        if word.eq_ignore_ascii_case("nan") {
            return Err(ElementError::NotFinite("NaN"));
        }
        if word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity") {
            return Err(ElementError::NotFinite("infinite value"));
        }
        return Err(ElementError::Syntax);
    }
    let v: f32 = e.parse().map_err(|_| ElementError::Syntax)?;
    if !v.is_finite() {
        return Err(ElementError::Range);
    }
    Ok(v)
}

/// Writes one float in the shortest form that reads back to the same value, with an
/// exponent (`1e+30`, `1.5e-07`) outside `1e-4 ..= 1e15` as PostgreSQL's `real` does.
pub fn write_element(out: &mut String, v: f32) {
    let a = v.abs();
    if a == 0.0 || (1e-4..1e15).contains(&a) {
        let _ = write!(out, "{v}");
        if v == 0.0 && v.is_sign_negative() {
            // `{}` prints -0 as "-0", which is what PostgreSQL prints too.
        }
        return;
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    let _ = write!(out, "{mantissa}e{sign}{:02}", exp.abs());
}

/// Formats a vector as `[x,y,...]`.
pub fn format(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 10 + 2);
    out.push('[');
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_element(&mut out, x);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_with_whitespace() {
        assert_eq!(parse(" [ 1, 2.5 ,-3e-2 ] ").unwrap(), vec![1.0, 2.5, -0.03]);
        assert_eq!(parse("[1]").unwrap(), vec![1.0]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["1,2", "[1,2", "1,2]", "[1,]", "[,1]", "[1,,2]", "[a]", "[1 2]", "[--1]", "", "[", "]", "[1]x"] {
            assert!(matches!(parse(bad), Err(ParseError::Malformed(_))), "{bad}");
        }
        assert_eq!(parse("[]"), Err(ParseError::Empty));
        assert_eq!(parse("[  ]"), Err(ParseError::Empty));
    }

    #[test]
    fn rejects_non_finite() {
        for bad in ["[nan]", "[NaN]", "[inf]", "[-Infinity]"] {
            assert!(matches!(parse(bad), Err(ParseError::NotFinite(_))), "{bad}");
        }
        assert!(matches!(parse("[1e39]"), Err(ParseError::OutOfRange(_))));
        assert!(matches!(parse("[-1e100]"), Err(ParseError::OutOfRange(_))));
    }

    #[test]
    fn dimension_limit() {
        let ok = format!("[{}]", vec!["1"; MAX_DIM].join(","));
        assert_eq!(parse(&ok).unwrap().len(), MAX_DIM);
        let bad = format!("[{}]", vec!["1"; MAX_DIM + 1].join(","));
        assert_eq!(parse(&bad), Err(ParseError::TooManyDimensions));
    }

    #[test]
    fn formats_like_postgres() {
        assert_eq!(format(&[1.0, 2.5, -0.03]), "[1,2.5,-0.03]");
        assert_eq!(format(&[1e30, 1.5e-7, 123456.0]), "[1e+30,1.5e-07,123456]");
        assert_eq!(format(&[f32::MAX]), "[3.4028235e+38]");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }

        #[test]
        fn arbitrary_bracketed_text_never_panics(s in "\\[[0-9eE+\\-., \\t]{0,40}\\]") {
            let _ = parse(&s);
        }

        #[test]
        fn valid_vectors_round_trip(v in proptest::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 1..50)) {
            let text = format(&v);
            let back = parse(&text).unwrap();
            prop_assert_eq!(back.len(), v.len());
            for (a, b) in back.iter().zip(&v) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
