//! Byte sizes on the command line (`64MiB`, `1GiB`, `4096`, ...) and their display.

/// Parses a byte count: a whole number, optionally followed by a unit (case-insensitive,
/// optionally after a space).
///
/// | unit | bytes |
/// |---|---|
/// | none, `B` | 1 |
/// | `K`, `KiB` | 1024 |
/// | `M`, `MiB` | 1024² |
/// | `G`, `GiB` | 1024³ |
/// | `T`, `TiB` | 1024⁴ |
/// | `KB`, `MB`, `GB`, `TB` | 1000, 1000², 1000³, 1000⁴ |
///
/// ```
/// use daxlog::cli::parse_size;
/// assert_eq!(parse_size("64MiB"), Ok(64 << 20));
/// assert_eq!(parse_size("4k"), Ok(4096));
/// assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
/// assert!(parse_size("1.5GiB").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "'{text}' is not a size: expected a whole number of bytes, optionally followed by \
             a unit (B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB, TB)"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{}' (use B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB \
                 or TB; only whole numbers)",
                unit.trim()
            ))
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// `bytes` for people: `64 MiB` when exact in a binary unit, else `1.5 GiB`, else `123 B`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{} {name}", bytes / size)
            } else {
                format!("{:.1} {name}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert_eq!(parse_size("8192B"), Ok(8192));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("512 kib"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("5kB"), Ok(5000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size(" 7GB "), Ok(7_000_000_000));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5GiB",
            "12XB",
            "1 2",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn display() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(100), "100 B");
        assert_eq!(human(4096), "4 KiB");
    }
}
