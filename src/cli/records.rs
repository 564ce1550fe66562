//! The forms a payload takes on stdin and stdout: text lines, NUL-terminated records, hex
//! lines (what `dump` prints) and JSON lines (what `dump --json` prints).

use clap::ValueEnum;

/// How `append` splits and decodes its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One entry per line, the line's bytes without its `\n`.
    Lines,
    /// One entry per NUL-terminated record (what `cat -0` prints), any bytes but NUL.
    Nul,
    /// One entry per line of hex digits, optionally after `LSN<TAB>` (what `dump` prints).
    Hex,
    /// One entry per line holding a JSON object with the payload in `hex` or in `text` (what
    /// `dump --json` prints).
    Json,
}

impl Format {
    /// The byte that ends a record.
    pub(crate) fn separator(self) -> u8 {
        match self {
            Format::Nul => 0,
            _ => b'\n',
        }
    }

    /// Names the `number`-th record (1-based), which starts at byte `offset` of the input.
    pub(crate) fn name(self, number: u64, offset: u64) -> String {
        match self {
            Format::Nul => format!("record {number} (at byte {offset} of stdin)"),
            _ => format!("record {number} (line {number})"),
        }
    }

    /// Appends the payload that `raw` (a record without its separator) stands for to `out`;
    /// on a malformed record, says what is wrong with it.
    pub(crate) fn decode(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Format::Lines | Format::Nul => {
                out.extend_from_slice(raw);
                Ok(())
            }
            Format::Hex => {
                let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                let (digits, column) = match line.iter().position(|&b| b == b'\t') {
                    Some(tab) => {
                        let lsn = &line[..tab];
                        if lsn.is_empty() || !lsn.iter().all(u8::is_ascii_digit) {
                            return Err(format!(
                                "expected hex digits, or an LSN, a tab and hex digits; found \
                                 {} before the tab",
                                show_text(lsn)
                            ));
                        }
                        (&line[tab + 1..], tab + 1)
                    }
                    None => (line, 0),
                };
                decode_hex(digits, out).map_err(|e| match e {
                    HexError::Digit(i, b) => {
                        format!("not hex: {} at column {}", show_byte(b), column + i + 1)
                    }
                    HexError::Odd(n) => format!("odd number of hex digits ({n})"),
                })
            }
            Format::Json => {
                let obj = match serde_json::from_slice::<Object>(raw) {
                    Ok(Object::Members(m)) => m,
                    Ok(Object::Duplicate(d)) => {
                        return Err(format!(
                            "the key {} is given twice{}: give each key once",
                            show_text(d.key.as_bytes()),
                            if d.at.is_empty() {
                                String::new()
                            } else {
                                format!(" in the object at {}", pointer(&d.at))
                            }
                        ))
                    }
                    Err(e) => {
                        // Not JSON, or JSON but not an object: the general parse says which.
                        let v: serde_json::Value = serde_json::from_slice(raw).map_err(not_json)?;
                        return Err(match v {
                            serde_json::Value::Object(_) => not_json(e),
                            v => format!("not a JSON object: {}", clip(&v.to_string())),
                        });
                    }
                };
                let start = out.len();
                match (obj.get("hex"), obj.get("text")) {
                    (Some(_), Some(_)) => {
                        return Err("both \"hex\" and \"text\" are given: give one".into())
                    }
                    (None, None) => {
                        return Err("no \"hex\" or \"text\" field holds the payload".into())
                    }
                    (Some(h), None) => {
                        let h = h.as_str().ok_or_else(|| {
                            format!("\"hex\" is not a string: {}", clip(&h.to_string()))
                        })?;
                        decode_hex(h.as_bytes(), out).map_err(|e| match e {
                            HexError::Digit(i, b) => {
                                format!("\"hex\": not hex: {} at digit {}", show_byte(b), i + 1)
                            }
                            HexError::Odd(n) => {
                                format!("\"hex\": odd number of hex digits ({n})")
                            }
                        })?;
                    }
                    (None, Some(t)) => {
                        let t = t.as_str().ok_or_else(|| {
                            format!("\"text\" is not a string: {}", clip(&t.to_string()))
                        })?;
                        out.extend_from_slice(t.as_bytes());
                    }
                }
                if let Some(len) = obj.get("len") {
                    let got = (out.len() - start) as u64;
                    let Some(n) = len.as_u64() else {
                        out.truncate(start);
                        // (An integer past u64 reads as a float: no payload is that long.)
                        if len.as_f64().is_some_and(|f| f >= u64::MAX as f64) {
                            return Err(format!(
                                "\"len\" is {}, past any length, but the payload has {}",
                                clip(&len.to_string()),
                                super::count(got, "byte", "bytes")
                            ));
                        }
                        return Err(format!(
                            "\"len\" is {}: not a whole number of bytes",
                            clip(&len.to_string())
                        ));
                    };
                    if n != got {
                        out.truncate(start);
                        return Err(format!(
                            "\"len\" is {n} but the payload has {}",
                            super::count(got, "byte", "bytes")
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A JSON object's members, or the first key that an object of it, at any depth, gives twice.
///
/// RFC 8259 says only that the names in an object SHOULD be unique, and parsers differ on which
/// value of a repeated name they keep (a map keeps the last): a record that repeats one, even
/// in a value `append` ignores, may not mean to another reader what it would mean here, so it
/// is not taken at all.
enum Object {
    Members(serde_json::Map<String, serde_json::Value>),
    Duplicate(Duplicate),
}

/// A key given twice, and where: the keys and array indexes from the record down to the
/// object that gives it (none: the record itself).
struct Duplicate {
    key: String,
    at: Vec<String>,
}

/// A JSON value in which no object gives a key twice, or the first key given twice.
enum Checked {
    Value(serde_json::Value),
    Duplicate(Duplicate),
}

/// Reads the members of an object, the values checked too; at the first duplicate, the rest
/// of the object is read only to check that the line is JSON.
fn members<'de, A: serde::de::MapAccess<'de>>(mut m: A) -> Result<Object, A::Error> {
    use serde::de::IgnoredAny;
    let mut members = serde_json::Map::new();
    while let Some(key) = m.next_key::<String>()? {
        let found = if members.contains_key(&key) {
            m.next_value::<IgnoredAny>()?;
            Duplicate {
                key,
                at: Vec::new(),
            }
        } else {
            match m.next_value::<Checked>()? {
                Checked::Value(v) => {
                    members.insert(key, v);
                    continue;
                }
                Checked::Duplicate(mut d) => {
                    d.at.insert(0, key);
                    d
                }
            }
        };
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        return Ok(Object::Duplicate(found));
    }
    Ok(Object::Members(members))
}

impl<'de> serde::Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Object;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Object, A::Error> {
                members(m)
            }
        }
        d.deserialize_map(Members)
    }
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        /// Builds the value as `serde_json::Value` does, checking the keys of every object.
        struct AnyValue;
        impl<'de> serde::de::Visitor<'de> for AnyValue {
            type Value = Checked;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_bool<E>(self, b: bool) -> Result<Checked, E> {
                Ok(Checked::Value(Value::Bool(b)))
            }

            fn visit_i64<E>(self, n: i64) -> Result<Checked, E> {
                Ok(Checked::Value(Value::from(n)))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Checked, E> {
                Ok(Checked::Value(Value::from(n)))
            }

            fn visit_f64<E>(self, x: f64) -> Result<Checked, E> {
                Ok(Checked::Value(Value::from(x)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Checked, E> {
                Ok(Checked::Value(Value::from(s)))
            }

            fn visit_string<E>(self, s: String) -> Result<Checked, E> {
                Ok(Checked::Value(Value::String(s)))
            }

            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked::Value(Value::Null))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Checked, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Checked>()? {
                    match item {
                        Checked::Value(v) => items.push(v),
                        Checked::Duplicate(mut d) => {
                            d.at.insert(0, items.len().to_string());
                            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                            return Ok(Checked::Duplicate(d));
                        }
                    }
                }
                Ok(Checked::Value(Value::Array(items)))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Checked, A::Error> {
                Ok(match members(m)? {
                    Object::Members(m) => Checked::Value(Value::Object(m)),
                    Object::Duplicate(d) => Checked::Duplicate(d),
                })
            }
        }
        d.deserialize_any(AnyValue)
    }
}

/// The JSON Pointer (RFC 6901) of the keys and indexes `at`, for an error message: `/lsn/0`;
/// at most 80 characters (the end kept), control characters escaped.
fn pointer(at: &[String]) -> String {
    let p: String = at
        .iter()
        .map(|seg| {
            let seg = seg.replace('~', "~0").replace('/', "~1");
            format!("/{}", clip(&seg).escape_debug())
        })
        .collect();
    let n = p.chars().count();
    if n > 80 {
        format!("...{}", p.chars().skip(n - 80).collect::<String>())
    } else {
        p
    }
}

enum HexError {
    /// Not a hex digit: its index and the byte.
    Digit(usize, u8),
    /// An odd number of digits.
    Odd(usize),
}

fn decode_hex(digits: &[u8], out: &mut Vec<u8>) -> Result<(), HexError> {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    if let Some(i) = digits.iter().position(|&b| value(b).is_none()) {
        return Err(HexError::Digit(i, digits[i]));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::Odd(digits.len()));
    }
    out.reserve(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        // Both are hex digits (checked above).
        out.push(value(pair[0]).unwrap_or(0) << 4 | value(pair[1]).unwrap_or(0));
    }
    Ok(())
}

/// Appends `payload` in lowercase hex to `out`.
pub(crate) fn encode_hex(payload: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(payload.len() * 2);
    for &b in payload {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// A JSON parse error, with what a `\u` escape must be where that is the trouble (the parser
/// says "unexpected end of hex escape" for a lone high surrogate before the closing quote).
fn not_json(e: serde_json::Error) -> String {
    let hint = if e.to_string().contains("hex escape") {
        " (a \\u escape takes 4 hex digits, and one of \\uD800-\\uDBFF must be followed by one \
         of \\uDC00-\\uDFFF: \"text\" holds Unicode text; give bytes that are not as \"hex\")"
    } else {
        ""
    };
    format!("not JSON: {e}{hint}")
}

/// `'g'` for a printable ASCII byte, else `byte 0x0a`.
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// Bytes quoted for an error message, shortened.
fn show_text(b: &[u8]) -> String {
    format!("{:?}", clip(&String::from_utf8_lossy(b)))
}

/// At most 40 characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(f: Format, raw: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        f.decode(raw, &mut out).map(|()| out)
    }

    #[test]
    fn hex_lines() {
        assert_eq!(dec(Format::Hex, b"00ff0a"), Ok(vec![0, 255, 10]));
        assert_eq!(dec(Format::Hex, b"00FF0A\r"), Ok(vec![0, 255, 10]));
        assert_eq!(dec(Format::Hex, b"17\t6869"), Ok(b"hi".to_vec()));
        assert_eq!(dec(Format::Hex, b"17\t"), Ok(vec![]));
        assert_eq!(dec(Format::Hex, b""), Ok(vec![]));
        assert_eq!(
            dec(Format::Hex, b"0g"),
            Err("not hex: 'g' at column 2".into())
        );
        assert_eq!(
            dec(Format::Hex, b"5\t0 1"),
            Err("not hex: byte 0x20 at column 4".into())
        );
        assert_eq!(
            dec(Format::Hex, b"abc"),
            Err("odd number of hex digits (3)".into())
        );
        assert_eq!(
            dec(Format::Hex, b"x\t00"),
            Err(
                "expected hex digits, or an LSN, a tab and hex digits; found \"x\" before the tab"
                    .into()
            )
        );
    }

    #[test]
    fn json_lines() {
        assert_eq!(
            dec(Format::Json, br#"{"lsn":3,"len":2,"hex":"0a00"}"#),
            Ok(vec![10, 0])
        );
        assert_eq!(dec(Format::Json, br#"{"text":"h\u00e9"}"#), Ok("hé".into()));
        assert_eq!(
            dec(Format::Json, br#"{"len":3,"hex":"0a00"}"#),
            Err("\"len\" is 3 but the payload has 2 bytes".into())
        );
        for (len, shown) in [
            ("1.0", "1.0"),
            ("1e0", "1.0"),
            ("-1", "-1"),
            ("\"1\"", "\"1\""),
        ] {
            assert_eq!(
                dec(
                    Format::Json,
                    format!(r#"{{"len":{len},"hex":"0a"}}"#).as_bytes()
                ),
                Err(format!("\"len\" is {shown}: not a whole number of bytes")),
            );
        }
        for len in ["18446744073709551616", "1e30"] {
            assert_eq!(
                dec(
                    Format::Json,
                    format!(r#"{{"len":{len},"hex":"0a"}}"#).as_bytes()
                ),
                Err(format!(
                    "\"len\" is {}, past any length, but the payload has 1 byte",
                    if len == "1e30" {
                        "1e+30"
                    } else {
                        "1.8446744073709552e+19"
                    }
                )),
            );
        }
        assert_eq!(
            dec(Format::Json, br#"{"hex":"0a","text":"x"}"#),
            Err("both \"hex\" and \"text\" are given: give one".into())
        );
        assert_eq!(
            dec(Format::Json, br#"{"lsn":1}"#),
            Err("no \"hex\" or \"text\" field holds the payload".into())
        );
        assert_eq!(
            dec(Format::Json, br#"{"hex":"zz"}"#),
            Err("\"hex\": not hex: 'z' at digit 1".into())
        );
        assert_eq!(
            dec(Format::Json, b"[1]"),
            Err("not a JSON object: [1]".into())
        );
        assert!(dec(Format::Json, b"{")
            .unwrap_err()
            .starts_with("not JSON: "));
        // A lone high surrogate: the parser's words, and what a \u escape must be.
        let lone = dec(Format::Json, br#"{"text":"\ud800"}"#).unwrap_err();
        assert!(
            lone.starts_with("not JSON: unexpected end of hex escape at line 1 column 16 (")
                && lone
                    .contains("one of \\uD800-\\uDBFF must be followed by one of \\uDC00-\\uDFFF"),
            "{lone}"
        );
        assert_eq!(
            dec(Format::Json, br#"{"text":"\ud83d\ude00"}"#),
            Ok("\u{1f600}".as_bytes().to_vec())
        );
        assert_eq!(
            dec(Format::Json, br#"{"hex":"00","hex":"11"}"#),
            Err("the key \"hex\" is given twice: give each key once".into())
        );
        assert_eq!(
            dec(Format::Json, br#"{"len":1,"text":"x","len":1}"#),
            Err("the key \"len\" is given twice: give each key once".into())
        );
        // A duplicate in a line that is not JSON is reported as not JSON.
        assert!(dec(Format::Json, br#"{"hex":"00","hex":"11""#)
            .unwrap_err()
            .starts_with("not JSON: "));
        assert_eq!(
            dec(Format::Json, br#"{"lsn":{"a":1},"text":"x"}"#),
            Ok(b"x".to_vec())
        );
        // A key given twice in any object of the record, however deep, makes it malformed.
        assert_eq!(
            dec(Format::Json, br#"{"lsn":{"a":1,"a":2},"text":"x"}"#),
            Err("the key \"a\" is given twice in the object at /lsn: give each key once".into())
        );
        assert_eq!(
            dec(
                Format::Json,
                br#"{"text":"x","m":[0,{"b":[{"c":1,"c":1}]}]}"#
            ),
            Err(
                "the key \"c\" is given twice in the object at /m/1/b/0: give each key once".into()
            )
        );
        // Keys are compared as decoded: an escape does not make a name another.
        assert_eq!(
            dec(Format::Json, br#"{"text":"x","\u0074ext":"y"}"#),
            Err("the key \"text\" is given twice: give each key once".into())
        );
        assert_eq!(
            dec(Format::Json, br#"{"a/b":{"~":{"k":1,"k":1}},"hex":""}"#),
            Err(
                "the key \"k\" is given twice in the object at /a~1b/~0: give each key once".into()
            )
        );
        // The first one in the line is named.
        assert_eq!(
            dec(Format::Json, br#"{"a":{"x":1,"x":2},"a":1}"#),
            Err("the key \"x\" is given twice in the object at /a: give each key once".into())
        );
        // Still refused as not JSON when the line is not, and as not an object when it is not.
        assert!(dec(Format::Json, br#"{"a":{"x":1,"x":2},"text":"x""#)
            .unwrap_err()
            .starts_with("not JSON: "));
        assert_eq!(
            dec(Format::Json, br#"[{"x":1,"x":2}]"#),
            Err("not a JSON object: [{\"x\":2}]".into())
        );
        // Values are kept as they were: numbers, nesting, unicode.
        assert_eq!(
            dec(
                Format::Json,
                br#"{"x":[1,-2,3.5,1e400,null,true,"\u00e9",{}],"len":1,"text":"y"}"#
            )
            .unwrap_err(),
            "not JSON: number out of range at line 1 column 20"
        );
        assert_eq!(
            dec(
                Format::Json,
                br#"{"x":[1,-2,3.5,null,true,"\u00e9",{}],"len":1.0,"text":"y"}"#
            ),
            Err("\"len\" is 1.0: not a whole number of bytes".into())
        );
        assert_eq!(
            dec(
                Format::Json,
                br#"{"x":[1,-2,3.5,null,true,"\u00e9",{"y":{}}],"len":1,"text":"y"}"#
            ),
            Ok(b"y".to_vec())
        );
        assert_eq!(
            dec(Format::Json, br#"{"hex":[1,{"a":"b"}]}"#),
            Err("\"hex\" is not a string: [1,{\"a\":\"b\"}]".into())
        );
    }

    #[test]
    fn hex_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let mut h = Vec::new();
        encode_hex(&all, &mut h);
        assert_eq!(dec(Format::Hex, &h), Ok(all));
    }
}
