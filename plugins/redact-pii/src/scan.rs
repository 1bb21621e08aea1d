//! The scanners. Each returns byte spans; `find_all` runs them in priority
//! order and drops anything overlapping an earlier, stronger finding.

use memhost_sdk::Finding;

type Span = (usize, usize);

/// A scanner: its label, its placeholder, and the spans it finds.
type Scanner = (&'static str, &'static str, fn(&[u8]) -> Vec<Span>);

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// No word character right before `i`.
fn starts_word(t: &[u8], i: usize) -> bool {
    i == 0 || !is_word(t[i - 1])
}

/// No word character at `i`.
fn ends_word(t: &[u8], i: usize) -> bool {
    i >= t.len() || !is_word(t[i])
}

/// Every finding, strongest first, without overlaps.
pub fn find_all(text: &str) -> Vec<Finding> {
    let t = text.as_bytes();
    let scanners: [Scanner; 9] = [
        ("secret", "[PRIVATE KEY]", private_keys),
        ("secret", "[SECRET]", prefixed_secrets),
        ("email", "[EMAIL]", emails),
        ("iban", "[IBAN]", ibans),
        ("card", "[CARD]", cards),
        ("ssn", "[SSN]", ssns),
        ("ip", "[IP]", ips),
        ("phone", "[PHONE]", phones),
        ("secret", "[SECRET]", high_entropy),
    ];
    let mut taken: Vec<Span> = Vec::new();
    let mut out = Vec::new();
    for (label, placeholder, scan) in scanners {
        for (start, end) in scan(t) {
            if taken.iter().any(|&(s, e)| start < e && s < end) {
                continue;
            }
            taken.push((start, end));
            out.push(Finding::new(start, end, label, placeholder));
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

fn find_from(t: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    t.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// `-----BEGIN … PRIVATE KEY-----` through the matching END line (or the
/// end of the text if it was cut off).
fn private_keys(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = find_from(t, b"-----BEGIN ", from) {
        let header_end = find_from(t, b"-----", start + 11).map(|i| i + 5);
        let is_private =
            header_end.is_some_and(|h| t[start..h].windows(11).any(|w| w == b"PRIVATE KEY"));
        if !is_private {
            from = start + 11;
            continue;
        }
        let end = find_from(t, b"-----END ", start)
            .and_then(|e| find_from(t, b"-----", e + 9).map(|i| i + 5))
            .unwrap_or(t.len());
        out.push((start, end));
        from = end;
    }
    out
}

/// Known API-key prefixes and how many key characters must follow.
const PREFIXES: &[(&str, usize)] = &[
    ("sk-", 20),
    ("sk_live_", 16),
    ("sk_test_", 16),
    ("rk_live_", 16),
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 30),
    ("glpat-", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("AIza", 30),
    ("AKIA", 16),
    ("ASIA", 16),
];

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn prefixed_secrets(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(prefix, min_rest) in PREFIXES {
        let p = prefix.as_bytes();
        let mut from = 0;
        while let Some(start) = find_from(t, p, from) {
            from = start + p.len();
            if !starts_word(t, start) {
                continue;
            }
            let mut end = from;
            while end < t.len() && is_key_char(t[end]) {
                end += 1;
            }
            let rest = &t[from..end];
            let ok = if prefix.starts_with("AKIA") || prefix.starts_with("ASIA") {
                rest.len() == min_rest
                    && rest
                        .iter()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            } else {
                rest.len() >= min_rest && rest.iter().any(u8::is_ascii_digit)
            };
            if ok {
                out.push((start, end));
                from = end;
            }
        }
    }
    out
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

fn emails(t: &[u8]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for at in t
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'@')
        .map(|(i, _)| i)
    {
        if out.last().is_some_and(|&(_, e)| at < e) {
            continue;
        }
        let mut start = at;
        while start > 0 && is_local(t[start - 1]) {
            start -= 1;
        }
        while start < at && t[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < t.len() && is_domain(t[end]) {
            end += 1;
        }
        while end > at + 1 && (t[end - 1] == b'.' || t[end - 1] == b'-') {
            end -= 1;
        }
        if start == at || end <= at + 1 {
            continue;
        }
        let domain = &t[at + 1..end];
        let Some(dot) = domain.iter().rposition(|b| *b == b'.') else {
            continue;
        };
        let tld = &domain[dot + 1..];
        if tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && dot > 0 {
            out.push((start, end));
        }
    }
    out
}

/// IBAN: country letters, check digits, then 11–30 alphanumerics, in
/// groups of four optionally separated by single spaces; mod-97 must be 1.
fn ibans(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= t.len() {
        let head = &t[i..i + 4];
        let looks = starts_word(t, i)
            && head[0].is_ascii_uppercase()
            && head[1].is_ascii_uppercase()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit();
        if !looks {
            i += 1;
            continue;
        }
        // Collect characters, remembering where each group could end.
        let mut compact = Vec::new();
        let mut ends = Vec::new();
        let mut j = i;
        while j < t.len() {
            let b = t[j];
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                compact.push(b);
                j += 1;
                if ends_word(t, j) || t[j] == b' ' {
                    ends.push((compact.len(), j));
                }
            } else if b == b' '
                && j + 1 < t.len()
                && t[j + 1].is_ascii_alphanumeric()
                && compact.len().is_multiple_of(4)
            {
                j += 1;
            } else {
                break;
            }
            if compact.len() > 34 {
                break;
            }
        }
        let found = ends.iter().rev().find(|&&(len, end)| {
            (15..=34).contains(&len) && ends_word(t, end) && iban_checksum(&compact[..len])
        });
        match found {
            Some(&(_, end)) => {
                out.push((i, end));
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

fn iban_checksum(iban: &[u8]) -> bool {
    let mut rem: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else if b.is_ascii_uppercase() {
            u32::from(b - b'A') + 10
        } else {
            return false;
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Runs of digits separated by single spaces or dashes.
fn digit_runs(t: &[u8], seps: &[u8]) -> Vec<(Span, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !t[i].is_ascii_digit() || !starts_word(t, i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = Vec::new();
        let mut end = i;
        while end < t.len() {
            if t[end].is_ascii_digit() {
                digits.push(t[end] - b'0');
                end += 1;
            } else if seps.contains(&t[end]) && end + 1 < t.len() && t[end + 1].is_ascii_digit() {
                end += 1;
            } else {
                break;
            }
        }
        if ends_word(t, end) {
            out.push(((start, end), digits));
        }
        i = end.max(i + 1);
    }
    out
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// How card numbers are grouped when written with separators: 4-4-4-4,
/// 4-4-4-4-3 (19 digits), 4-6-5 (Amex), 4-6-4 (Diners), 4-4-4-1.
fn card_grouping(groups: &[usize]) -> bool {
    matches!(
        groups,
        [_] | [4, 4, 4, 4] | [4, 4, 4, 4, 3] | [4, 6, 5] | [4, 6, 4] | [4, 4, 4, 1]
    )
}

fn cards(t: &[u8]) -> Vec<Span> {
    digit_runs(t, b" -")
        .into_iter()
        .filter(|&((start, end), ref d)| {
            let groups: Vec<usize> = t[start..end]
                .split(|b| !b.is_ascii_digit())
                .map(<[u8]>::len)
                .collect();
            (13..=19).contains(&d.len())
                && (2..=6).contains(&d[0])
                && (start == 0 || t[start - 1] != b'+')
                && card_grouping(&groups)
                && luhn(d)
        })
        .map(|(span, _)| span)
        .collect()
}

fn ssns(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    for i in 0..t.len().saturating_sub(10) {
        let w = &t[i..i + 11];
        let shape = w.iter().enumerate().all(|(k, b)| match k {
            3 | 6 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
        if !shape || !starts_word(t, i) || !ends_word(t, i + 11) {
            continue;
        }
        let area = &w[0..3];
        let valid = area != b"000"
            && area != b"666"
            && area[0] != b'9'
            && &w[4..6] != b"00"
            && &w[7..11] != b"0000";
        if valid {
            out.push((i, i + 11));
        }
    }
    out
}

fn ips(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    // IPv4: four dotted octets, not part of a longer dotted number.
    let mut i = 0;
    while i < t.len() {
        if !t[i].is_ascii_digit() || !starts_word(t, i) || (i > 0 && t[i - 1] == b'.') {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < t.len() && (t[end].is_ascii_digit() || t[end] == b'.') {
            end += 1;
        }
        let mut candidate = &t[i..end];
        let mut stop = end;
        if candidate.last() == Some(&b'.') {
            candidate = &candidate[..candidate.len() - 1];
            stop -= 1;
        }
        let ok = std::str::from_utf8(candidate)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
            .is_some()
            && ends_word(t, stop);
        if ok {
            out.push((i, stop));
        }
        i = end.max(i + 1);
    }
    // IPv6: a token of hex digits and colons (and dots, for an embedded
    // IPv4 tail) that std parses.
    let is_v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut i = 0;
    while i < t.len() {
        if !is_v6(t[i]) || (i > 0 && (is_word(t[i - 1]) || t[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < t.len() && is_v6(t[end]) {
            end += 1;
        }
        let token = &t[i..end];
        let colons = token.iter().filter(|b| **b == b':').count();
        let ok = colons >= 2
            && ends_word(t, end)
            && token.iter().any(u8::is_ascii_hexdigit)
            && std::str::from_utf8(token)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
        if ok {
            out.push((i, end));
        }
        i = end.max(i + 1);
    }
    out
}

/// `YYYY-MM-DD`, `DD.MM.YYYY`, `MM/DD/YYYY` and the like: not phone numbers.
fn looks_like_date(s: &[u8]) -> bool {
    let parts: Vec<&[u8]> = s.split(|b| matches!(b, b'-' | b'.' | b'/')).collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && (parts[0].len() == 4 || parts[2].len() == 4 || parts[2].len() == 2)
        && parts[1].len() <= 2
}

fn phones(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        let opener = (b == b'+' || b == b'(') && t.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !(opener || b.is_ascii_digit()) || !starts_word(t, i) || (i > 0 && t[i - 1] == b'+') {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < t.len() {
            let c = t[end];
            let prev = t[end - 1];
            let sep = matches!(c, b' ' | b'-' | b'.' | b'(' | b')');
            if c.is_ascii_digit()
                || (sep && !(matches!(prev, b' ' | b'-' | b'.') && matches!(c, b' ' | b'-' | b'.')))
            {
                end += 1;
            } else {
                break;
            }
        }
        while end > i && !t[end - 1].is_ascii_digit() {
            end -= 1;
        }
        let span = &t[i..end];
        let digits = span.iter().filter(|b| b.is_ascii_digit()).count();
        let separated = span
            .iter()
            .any(|b| matches!(b, b' ' | b'-' | b'.' | b'(' | b')'));
        let ok = ends_word(t, end)
            && if b == b'+' {
                (8..=15).contains(&digits)
            } else {
                separated && (7..=15).contains(&digits) && !looks_like_date(span)
            };
        if ok {
            out.push((i, end));
        }
        // Never start again inside a run that was judged as a whole.
        i = end.max(i + 1);
    }
    out
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_-.".contains(&b)
}

/// Shannon entropy in bits per byte.
fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Long random-looking tokens: ≥ 32 characters of base64/url-safe
/// alphabet, letters and digits mixed, entropy ≥ 4.2 bits per character
/// (pure hex such as a git hash tops out at 4.0 and is left alone).
fn high_entropy(t: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !is_token_char(t[i]) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < t.len() && is_token_char(t[end]) {
            end += 1;
        }
        let token = &t[i..end];
        let mixed = token.iter().any(u8::is_ascii_digit)
            && token.iter().any(u8::is_ascii_lowercase)
            && token.iter().any(u8::is_ascii_uppercase);
        if token.len() >= 32 && mixed && entropy(token) >= 4.2 {
            out.push((i, end));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels found in `text`, with the text they cover.
    fn found(text: &str) -> Vec<(String, String)> {
        find_all(text)
            .into_iter()
            .map(|f| {
                (
                    f.label.clone(),
                    text[f.start as usize..f.end as usize].to_string(),
                )
            })
            .collect()
    }

    fn only(text: &str, label: &str, covered: &str) {
        assert_eq!(
            found(text),
            vec![(label.to_string(), covered.to_string())],
            "in {text:?}"
        );
    }

    fn nothing(text: &str) {
        assert_eq!(found(text), vec![], "in {text:?}");
    }

    #[test]
    fn emails() {
        only(
            "write to ada.lovelace+notes@example.co.uk.",
            "email",
            "ada.lovelace+notes@example.co.uk",
        );
        only("<bob@mail.example.org>", "email", "bob@mail.example.org");
        nothing("a user@localhost, @mentions and foo@bar");
    }

    #[test]
    fn phones() {
        only("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958");
        only("US: (555) 123-4567", "phone", "(555) 123-4567");
        only("desk 555-0100", "phone", "555-0100");
        only("+4915112345678", "phone", "+4915112345678");
        nothing("on 2024-01-15 we shipped 1.2.3 and 3.14159, order 123456789");
    }

    #[test]
    fn cards() {
        only(
            "card 4111 1111 1111 1111 exp",
            "card",
            "4111 1111 1111 1111",
        );
        only("4242-4242-4242-4242", "card", "4242-4242-4242-4242");
        only("amex 378282246310005", "card", "378282246310005");
        // Luhn-invalid, or not a card prefix: not a card.
        nothing("ref 4111 1111 1111 1112");
        nothing("id 1234567890123452");
    }

    #[test]
    fn ibans() {
        only(
            "pay DE89 3704 0044 0532 0130 00 today",
            "iban",
            "DE89 3704 0044 0532 0130 00",
        );
        only("GB82WEST12345698765432", "iban", "GB82WEST12345698765432");
        // Bad checksum.
        nothing("DE89 3704 0044 0532 0130 01");
    }

    #[test]
    fn ssns() {
        only("SSN 123-45-6789.", "ssn", "123-45-6789");
        nothing("000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000");
    }

    #[test]
    fn ips() {
        only("host 192.168.1.20 up", "ip", "192.168.1.20");
        only(
            "v6 2001:db8::8a2e:370:7334 ok",
            "ip",
            "2001:db8::8a2e:370:7334",
        );
        only("link fe80::1", "ip", "fe80::1");
        nothing("version 1.2.3.4.5 and 999.1.1.1 and std::net::Ipv6Addr");
    }

    #[test]
    fn secrets() {
        only(
            "key sk-proj-abc123DEF456ghi789JKL0 here",
            "secret",
            "sk-proj-abc123DEF456ghi789JKL0",
        );
        only(
            "token ghp_0123456789abcdefABCDEF0123456789abcd",
            "secret",
            "ghp_0123456789abcdefABCDEF0123456789abcd",
        );
        only(
            "aws AKIAIOSFODNN7EXAMPLE id",
            "secret",
            "AKIAIOSFODNN7EXAMPLE",
        );
        only(
            "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "secret",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        );
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        only(&format!("key:\n{pem}\nthanks"), "secret", pem);
        only(
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            "secret",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        );
        // Not secrets: a word that starts like one, a git hash, a public key block.
        nothing("task-list, sk-short, commit 9fceb02d0ae598e95dc970b74767f19372d61af8");
        nothing("-----BEGIN PUBLIC KEY-----\nMFkwEw\n-----END PUBLIC KEY-----");
    }

    #[test]
    fn unicode_around_findings_keeps_byte_offsets() {
        let text = "Zoë → zoe@example.com ✓";
        let f = find_all(text);
        assert_eq!(
            &text[f[0].start as usize..f[0].end as usize],
            "zoe@example.com"
        );
    }

    #[test]
    fn blocklist_is_case_insensitive() {
        let r = crate::PiiRedactor::with_blocklist("Project Falcon, nightingale");
        let text = "project falcon and NIGHTINGALE";
        let spans: Vec<_> = r
            .find(text)
            .iter()
            .map(|f| {
                (
                    f.label.clone(),
                    text[f.start as usize..f.end as usize].to_string(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("term".to_string(), "project falcon".to_string()),
                ("term".to_string(), "NIGHTINGALE".to_string())
            ]
        );
    }
}
