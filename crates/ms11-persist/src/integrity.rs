//! The checksum line that lets a load tell a damaged file from a good one.
//!
//! A file we write starts `{\n  "integrity": "crc32c:XXXXXXXX",` and the CRC-32C covers
//! the JSON that follows with that member taken out (`{` + the rest). The file stays
//! plain JSON (the seed's loader reads it; `integrity` is just one more field). Files
//! without the line (the seed's, hand-written ones) are accepted on parse and
//! validation alone.

const PREFIX: &[u8] = b"{\n  \"integrity\": \"crc32c:";
const HEX_LEN: usize = 8;
const SUFFIX: &[u8] = b"\",";

/// Serialised state bytes (`{...}`) → file bytes with the checksum line.
pub(crate) fn seal(json: &[u8]) -> Vec<u8> {
    let crc = crc32c::crc32c(json);
    let rest = json.get(1..).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + PREFIX.len() + HEX_LEN + SUFFIX.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(format!("{crc:08x}").as_bytes());
    out.extend_from_slice(SUFFIX);
    out.extend_from_slice(rest);
    out
}

/// What the checksum line says about a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seal {
    /// No checksum line: judge by parsing alone.
    Absent,
    /// The checksum matches.
    Intact,
    /// The checksum does not match: the file was damaged (or edited by hand).
    Mismatch {
        /// Stored CRC.
        stored: String,
        /// CRC of the content.
        actual: String,
    },
}

/// Checks the checksum line of file bytes.
pub(crate) fn check(bytes: &[u8]) -> Seal {
    let Some(after_prefix) = bytes.strip_prefix(PREFIX) else {
        return Seal::Absent;
    };
    if after_prefix.len() < HEX_LEN + SUFFIX.len()
        || &after_prefix[HEX_LEN..HEX_LEN + SUFFIX.len()] != SUFFIX
    {
        return Seal::Mismatch {
            stored: String::from_utf8_lossy(after_prefix.get(..HEX_LEN).unwrap_or(after_prefix))
                .into_owned(),
            actual: "(malformed checksum line)".into(),
        };
    }
    let stored = String::from_utf8_lossy(&after_prefix[..HEX_LEN]).into_owned();
    let rest = &after_prefix[HEX_LEN + SUFFIX.len()..];
    let mut hasher_input = Vec::with_capacity(rest.len() + 1);
    hasher_input.push(b'{');
    hasher_input.extend_from_slice(rest);
    let actual = format!("{:08x}", crc32c::crc32c(&hasher_input));
    if actual == stored {
        Seal::Intact
    } else {
        Seal::Mismatch { stored, actual }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_check_intact_and_stay_json() {
        let json = b"{\n  \"planet\": \"naboo\"\n}\n";
        let sealed = seal(json);
        assert_eq!(check(&sealed), Seal::Intact);
        let v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(v["planet"], "naboo");
        assert!(v["integrity"].as_str().unwrap().starts_with("crc32c:"));
    }

    #[test]
    fn any_flipped_byte_after_the_line_is_a_mismatch() {
        let sealed = seal(b"{\n  \"planet\": \"naboo\",\n  \"zone\": \"theed\"\n}\n");
        let start = PREFIX.len() + HEX_LEN + SUFFIX.len();
        for i in start..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(check(&bad), Seal::Mismatch { .. }),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn files_without_the_line_are_absent() {
        assert_eq!(check(b"{\"planet\": \"naboo\"}"), Seal::Absent);
        assert_eq!(check(b""), Seal::Absent);
    }
}
