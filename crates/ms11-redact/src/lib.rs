//! Secrets out of everything ms11-recovery writes: the one function that finds and
//! replaces them ([`redact`]), and the rule for configuration keys that hold secrets
//! ([`is_secret_key`]). The log writer, `config show`, error messages, the incidents
//! stored in state files and webhook payloads all use these, so a secret hidden in one
//! place is hidden in all. Pure functions without I/O, so every crate may depend on
//! this one (`ms11-state` included).
//!
//! What counts as a secret in text:
//! - the value of a secret-looking key in `key=value`, `key: value`, `"key": "value"`
//!   (quoted values whole, spaces included) and `password value` forms (`password`,
//!   `pass`, `passphrase`, `token`, `secret`, `*_key`, `auth`, `credentials`, ...);
//! - credentials in URLs: `user:pass@` (the password), `token@` (all of it);
//! - webhook tokens: Discord `/api/webhooks/ID/TOKEN`, Slack `hooks.slack.com/services/...`,
//!   Telegram `botID:TOKEN`, ntfy access tokens (`tk_...`), and query parameters
//!   (`?token=`, `&auth=`, `?key=`, `?access_token=`, ...);
//! - `Bearer` and `Basic` credentials.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Words that name a secret, as parts of a key (`session_key`, `api-token`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "apikey",
    "auth",
    "authorization",
    "credential",
    "credentials",
];

/// Whether a configuration key (dotted, any segment) names a secret: one of its words
/// (split at `_`, `-`, `.`) is `password`, `token`, `secret`, `key`, ..., or it is a
/// webhook URL.
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    if lower.contains("webhook") {
        return true;
    }
    lower
        .split(['.', '_', '-'])
        .any(|word| SECRET_WORDS.contains(&word))
}

/// Words after `password` that are plain prose, not the password (`the password you
/// entered was incorrect`).
const PROSE: &[&str] = &[
    "a",
    "an",
    "and",
    "are",
    "be",
    "did",
    "does",
    "entered",
    "expired",
    "failed",
    "field",
    "for",
    "from",
    "has",
    "have",
    "in",
    "incorrect",
    "invalid",
    "is",
    "may",
    "must",
    "not",
    "of",
    "on",
    "or",
    "prompt",
    "required",
    "reset",
    "the",
    "to",
    "was",
    "were",
    "with",
    "wrong",
    "you",
    "your",
];

struct Rules {
    simple: Vec<(Regex, &'static str)>,
    key_value: Regex,
    spaced: Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let simple = [
            // URL credentials: scheme://user:pass@host keeps the user.
            (
                r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@",
                "${1}[redacted]@",
            ),
            // A token as the URL's user: scheme://token@host.
            (r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@\[]+@", "${1}[redacted]@"),
            // Discord (and Discord-compatible) webhooks: /api/webhooks/<id>/<token>.
            (r"(?i)(/api/webhooks/\d+/)[A-Za-z0-9_.-]+", "${1}[redacted]"),
            // Slack incoming webhooks.
            (r"(?i)(hooks\.slack\.com/services/)[A-Za-z0-9_/-]+", "${1}[redacted]"),
            // Telegram bot tokens: bot123456:ABC...
            (r"(?i)(bot\d+:)[A-Za-z0-9_-]{20,}", "${1}[redacted]"),
            // ntfy access tokens.
            (r"\btk_[A-Za-z0-9]{16,}", "[redacted]"),
            // Tokens in query strings.
            (
                r"(?i)([?&;](?:[a-z0-9_-]*token|auth|key|apikey|api_key|secret|sig|signature|password|pass|pwd)=)[^&\s#]+",
                "${1}[redacted]",
            ),
            // HTTP credentials.
            // (A credential has a digit somewhere: "a basic string" is prose.)
            (
                r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/-]*[0-9][A-Za-z0-9._~+/=-]*",
                "${1}${2}[redacted]",
            ),
        ]
        .into_iter()
        .filter_map(|(re, with)| Regex::new(re).ok().map(|r| (r, with)))
        .collect();
        // key = value, key: value, "key": "value", key="a b", \"key\": \"value\".
        let key_value = Regex::new(
            r#"(?im)(\b[a-z0-9_-]*?(?:password|passwd|passphrase|pass|pwd|secret|token|apikey|api[_-]?key|session[_-]?key|private[_-]?key|access[_-]?key|[_-]key|auth|authorization|credentials?))(\\?["']?)(\s*[=:]\s*)(?:(\\?")(?:[^"\\\n]|\\[^"])*(\\?"|$)|(')[^'\n]*('|$)|([^\s"'`&,;}\]\)]+))"#,
        )
        .ok();
        // password hunter2 (no separator).
        let spaced = Regex::new(r"(?i)\b(password|passwd|passphrase|pass|pwd)(\s+)([^\s,;]+)").ok();
        Rules {
            simple,
            key_value: key_value.unwrap_or_else(never_matches),
            spaced: spaced.unwrap_or_else(never_matches),
        }
    })
}

fn never_matches() -> Regex {
    #[allow(clippy::unwrap_used)] // A constant, valid pattern.
    Regex::new(r"[^\s\S]").unwrap()
}

/// `text` with every secret it holds replaced by `[redacted]` (see the crate docs for
/// what counts). Borrowed when there was nothing to hide.
pub fn redact(text: &str) -> Cow<'_, str> {
    let rules = rules();
    let mut out = Cow::Borrowed(text);
    for (re, with) in &rules.simple {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, *with).into_owned());
        }
    }
    if rules.key_value.is_match(&out) {
        let replaced = rules.key_value.replace_all(&out, |c: &Captures<'_>| {
            let get = |i: usize| c.get(i).map_or("", |m| m.as_str());
            let (open, close) = match (c.get(4), c.get(6)) {
                (Some(_), _) => (get(4), get(5)),
                (None, Some(_)) => (get(6), get(7)),
                (None, None) if get(8).starts_with("[redacted") => return c[0].to_owned(),
                (None, None) => ("", ""),
            };
            format!("{}{}{}{open}{REDACTED}{close}", get(1), get(2), get(3))
        });
        out = Cow::Owned(replaced.into_owned());
    }
    if rules.spaced.is_match(&out) {
        let replaced = rules.spaced.replace_all(&out, |c: &Captures<'_>| {
            let word = &c[3];
            let bare = word.trim_matches(|ch: char| !ch.is_alphanumeric());
            if PROSE.contains(&bare.to_ascii_lowercase().as_str())
                || word.starts_with(REDACTED)
                || word.starts_with(['=', ':'])
            {
                c[0].to_owned()
            } else {
                format!("{}{}{REDACTED}", &c[1], &c[2])
            }
        });
        out = Cow::Owned(replaced.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_text_are_redacted() {
        let cases = [
            (
                "login password=hunter2 user=bob",
                "login password=[redacted] user=bob",
            ),
            (
                "pass=abc passphrase=def pwd=x",
                "pass=[redacted] passphrase=[redacted] pwd=[redacted]",
            ),
            (
                r#"{"session_key": "abc 123", "x": 1}"#,
                r#"{"session_key": "[redacted]", "x": 1}"#,
            ),
            (
                r#"{"message":"login password=\"hunter 2\" ok"}"#,
                r#"{"message":"login password=\"[redacted]\" ok"}"#,
            ),
            ("password: 'a b c' then", "password: '[redacted]' then"),
            (
                "TOML parse error\n1 | password = \"hunter 2\n  |   ^\n",
                "TOML parse error\n1 | password = \"[redacted]\n  |   ^\n",
            ),
            ("my_password=s3cret", "my_password=[redacted]"),
            (
                "ran `login --pass=x1` ok",
                "ran `login --pass=[redacted]` ok",
            ),
            ("api_token: abc", "api_token: [redacted]"),
            (
                "login bob password hunter2 now",
                "login bob password [redacted] now",
            ),
            (
                "the password you entered was incorrect",
                "the password you entered was incorrect",
            ),
            ("wrong password", "wrong password"),
            (
                "POST https://discord.com/api/webhooks/123456/AbC-dEf_123 failed",
                "POST https://discord.com/api/webhooks/123456/[redacted] failed",
            ),
            (
                "https://discordapp.com/api/webhooks/1/x.y-z?wait=true",
                "https://discordapp.com/api/webhooks/1/[redacted]?wait=true",
            ),
            (
                "url http://user:pa55@host:8080/x",
                "url http://user:[redacted]@host:8080/x",
            ),
            (
                "https://tk_AbCdEfGhIjKlMnOpQrStUv@ntfy.sh/t",
                "https://[redacted]@ntfy.sh/t",
            ),
            (
                "https://ntfy.sh/alerts?auth=QmFzaWMgZm9v",
                "https://ntfy.sh/alerts?auth=[redacted]",
            ),
            (
                "https://x.example/hook?token=abc&x=1",
                "https://x.example/hook?token=[redacted]&x=1",
            ),
            (
                "https://x.example/hook?a=1&access_token=abc",
                "https://x.example/hook?a=1&access_token=[redacted]",
            ),
            (
                "ntfy token tk_abcdefghijklmnopqrstuvwxyz1",
                "ntfy token [redacted]",
            ),
            (
                "Authorization: Bearer abcdef123456",
                "Authorization: [redacted] [redacted]",
            ),
            (
                "https://hooks.slack.com/services/T0/B0/XyZ",
                "https://hooks.slack.com/services/[redacted]",
            ),
            ("nothing secret here", "nothing secret here"),
            ("invalid basic string", "invalid basic string"),
            (
                "Authorization: Basic dXNlcjpwYXNz1==",
                "Authorization: [redacted] [redacted]",
            ),
            (
                "keep_generations = 3, save_interval: 60",
                "keep_generations = 3, save_interval: 60",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        for text in [
            "password=hunter2",
            "password hunter2",
            r#""token": "a b""#,
            "http://u:p@h/",
        ] {
            let once = redact(text).into_owned();
            assert_eq!(redact(&once), once, "{text}");
        }
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "password",
            "plugins.config.swg-emu.password",
            "session.0.recovery.notify.webhook_url",
            "api_token",
            "session_key",
            "plugins.config.x.api-key",
            "client_secret",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "keep_generations",
            "save_interval",
            "session.0.client.command",
            "monkey",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
