//! Names and contents of the crash files the SOE client writes on a crash:
//! `<prog>-<ver>-<YYYYMMDDhhmmss>.txt` and `.mdmp` in its working directory.

use std::time::{SystemTime, UNIX_EPOCH};

/// The executable name in the crash files' names.
pub const PROGRAM: &str = "SwgClient_r";
/// The version in the crash files' names.
pub const VERSION: &str = "1.0";
/// The start of the crash report text, as the real client writes it.
pub const REPORT_TEXT: &str =
    "automated crash dump from SwgClient_r\nException c0000005(0)=code 00401a2b=addr\n";

/// `YYYYMMDDhhmmss` in UTC for `time` (times before 1970 give the epoch).
pub fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The crash files' stem, e.g. `SwgClient_r-1.0-20261125031244`; append `.txt` or
/// `.mdmp` (never `Path::with_extension`, which would cut at the version's dot).
pub fn dump_stem(time: SystemTime) -> String {
    format!("{PROGRAM}-{VERSION}-{}", utc_stamp(time))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(at(0)), "19700101000000");
        // 2026-11-25 03:12:44 UTC
        assert_eq!(utc_stamp(at(1_795_576_364)), "20261125031244");
        // leap day
        assert_eq!(utc_stamp(at(1_709_208_000)), "20240229120000");
        assert_eq!(utc_stamp(at(951_868_799)), "20000229235959");
    }

    #[test]
    fn stem_keeps_program_version_and_stamp() {
        assert_eq!(dump_stem(at(0)), "SwgClient_r-1.0-19700101000000");
    }
}
