//! Times a text refers to, in English, placed from when it was said (UTC).
//!
//! | written                                              | period                         |
//! |------------------------------------------------------|--------------------------------|
//! | `today`, `tonight`, `this morning`                   | the day it was said            |
//! | `yesterday`, `tomorrow`, `the day before yesterday`  | that day                       |
//! | `last Tuesday`, `next Friday`, `this Monday`         | that weekday of the week before, after, of the week it was said |
//! | `on Sunday`, `Sunday`                                | the last Sunday before the day it was said |
//! | `last week`, `this month`, `next year`, `last weekend` | that ISO week (Monday first), month, year, Saturday–Sunday |
//! | `3 days ago`, `two weeks ago`, `in a month`, `in 2 years` | that day, week, month, year |
//! | `3 March 2025`, `March 3rd, 2025`, `the 3rd of March`, `March 3` | that day (no year: the year it was said) |
//! | `March 2025`, `in March`                             | that month                     |
//! | `in 2019`, `since 2019`                              | that year                      |
//! | `2025-03-03`                                         | that day                       |
//!
//! Nothing else: a bare number is not a year, a weekday alone in a name
//! ("Tuesday Group") still counts — the rules are words, not grammar.

/// A time the text refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    /// The words, as written.
    pub text: String,
    /// Start, Unix ms (UTC), inclusive.
    pub start: i64,
    /// End, Unix ms (UTC), exclusive.
    pub end: i64,
}

/// Most times one text yields.
pub const MAX_TIMES: usize = 32;

const DAY_MS: i64 = 86_400_000;

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const NUMBERS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

/// Is `lower` (a lowercase word) a weekday, a month or a day like `today`:
/// a time, never a name?
pub fn is_time_word(lower: &str) -> bool {
    WEEKDAYS.contains(&lower) || MONTHS.contains(&lower) || crate::scan::TIMES.contains(&lower)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1–12, day 1–31) of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// Monday = 0 … Sunday = 6 of a day since 1970-01-01 (a Thursday).
fn weekday(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

/// A period of whole days, in ms.
fn days(first: i64, count: i64) -> (i64, i64) {
    (first * DAY_MS, (first + count) * DAY_MS)
}

fn month_period(y: i64, m: i64) -> (i64, i64) {
    days(days_from_civil(y, m, 1), days_in_month(y, m))
}

fn year_period(y: i64) -> (i64, i64) {
    let first = days_from_civil(y, 1, 1);
    days(first, days_from_civil(y + 1, 1, 1) - first)
}

/// The month `n` months from (y, m).
fn add_months(y: i64, m: i64, n: i64) -> (i64, i64) {
    let k = y * 12 + (m - 1) + n;
    (k.div_euclid(12), k.rem_euclid(12) + 1)
}

/// A word of the text: lowercase, with its byte span.
struct Word {
    text: String,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        let part = c.is_alphanumeric() || c == '-';
        match (start, part) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push(Word {
                    text: text[s..i].to_lowercase(),
                    start: s,
                    end: i,
                });
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn number(w: &str) -> Option<i64> {
    if let Some(n) = NUMBERS.iter().position(|n| *n == w) {
        return Some(n as i64);
    }
    if w == "a" || w == "an" {
        return Some(1);
    }
    w.parse::<i64>().ok().filter(|n| (0..=999).contains(n))
}

/// `3`, `3rd`, `21st` as a day of the month.
fn day_of_month(w: &str) -> Option<i64> {
    let digits = w
        .strip_suffix("st")
        .or_else(|| w.strip_suffix("nd"))
        .or_else(|| w.strip_suffix("rd"))
        .or_else(|| w.strip_suffix("th"))
        .unwrap_or(w);
    digits.parse::<i64>().ok().filter(|d| (1..=31).contains(d))
}

fn year(w: &str) -> Option<i64> {
    (w.len() == 4)
        .then(|| w.parse::<i64>().ok())
        .flatten()
        .filter(|y| (1900..=2199).contains(y))
}

fn month(w: &str) -> Option<i64> {
    MONTHS
        .iter()
        .position(|m| *m == w || (w.len() == 3 && m.starts_with(w) && w != "may"))
        .or_else(|| (w == "sept").then_some(8))
        .map(|i| i as i64 + 1)
}

fn unit_period(unit: &str, day: i64, n: i64) -> Option<(i64, i64)> {
    let (y, m, _) = civil_from_days(day);
    Some(match unit.trim_end_matches('s') {
        "day" => days(day + n, 1),
        "week" => days(day - weekday(day) + 7 * n, 7),
        "month" => {
            let (y, m) = add_months(y, m, n);
            month_period(y, m)
        }
        "year" => year_period(y + n),
        _ => return None,
    })
}

/// An ISO date `2025-03-03`.
fn iso_date(w: &str) -> Option<(i64, i64)> {
    let mut parts = w.split('-');
    let y = year(parts.next()?)?;
    let m = parts.next()?.parse::<i64>().ok()?;
    let d = parts.next()?.parse::<i64>().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    Some(days(days_from_civil(y, m, d), 1))
}

/// A day of a month, when it exists.
fn date(y: i64, m: i64, d: i64) -> Option<(i64, i64)> {
    (d <= days_in_month(y, m)).then(|| days(days_from_civil(y, m, d), 1))
}

/// The times `text` refers to, placed from `observed_at` (Unix ms, UTC).
pub fn times(text: &str, observed_at: i64) -> Vec<When> {
    let w = words(text);
    let today = observed_at.div_euclid(DAY_MS);
    let (this_year, _, _) = civil_from_days(today);
    let at = |i: usize| w.get(i).map_or("", |w| w.text.as_str());
    let mut out: Vec<When> = Vec::new();
    let mut i = 0;
    while i < w.len() && out.len() < MAX_TIMES {
        // Each rule gives how many words it took and the period.
        let found: Option<(usize, (i64, i64))> = (|| {
            let word = at(i);
            match word {
                "today" | "tonight" => return Some((1, days(today, 1))),
                "yesterday" => return Some((1, days(today - 1, 1))),
                "tomorrow" => return Some((1, days(today + 1, 1))),
                "the"
                    if at(i + 1) == "day" && at(i + 2) == "before" && at(i + 3) == "yesterday" =>
                {
                    return Some((4, days(today - 2, 1)));
                }
                "the" if at(i + 1) == "day" && at(i + 2) == "after" && at(i + 3) == "tomorrow" => {
                    return Some((4, days(today + 2, 1)));
                }
                "this" if matches!(at(i + 1), "morning" | "afternoon" | "evening") => {
                    return Some((2, days(today, 1)));
                }
                _ => {}
            }
            // last / this / next + weekday, week, month, year, weekend.
            let step = match word {
                "last" | "previous" => Some(-1),
                "this" => Some(0),
                "next" => Some(1),
                _ => None,
            };
            if let Some(step) = step {
                let what = at(i + 1);
                if let Some(wd) = WEEKDAYS.iter().position(|d| *d == what) {
                    let monday = today - weekday(today);
                    return Some((2, days(monday + wd as i64 + 7 * step, 1)));
                }
                if what == "weekend" {
                    let saturday = today - weekday(today) + 5;
                    return Some((2, days(saturday + 7 * step, 2)));
                }
                if let Some(p) = unit_period(what, today, step).filter(|_| !what.ends_with('s')) {
                    return Some((2, p));
                }
                return None;
            }
            // N units ago.
            if let Some(n) = number(word)
                && at(i + 2) == "ago"
                && let Some(p) = unit_period(at(i + 1), today, -n)
            {
                return Some((3, p));
            }
            // in N units; in <month>; in <year>; since <year>.
            if word == "in" || word == "since" {
                if let Some(n) = number(at(i + 1)).filter(|_| word == "in")
                    && let Some(p) = unit_period(at(i + 2), today, n)
                {
                    return Some((3, p));
                }
                if let Some(y) = year(at(i + 1)) {
                    return Some((2, year_period(y)));
                }
                if word == "in"
                    && let Some(m) =
                        month(at(i + 1)).filter(|_| at(i + 1).len() > 3 || at(i + 1) == "may")
                {
                    if let Some(y) = year(at(i + 2)) {
                        return Some((3, month_period(y, m)));
                    }
                    return Some((2, month_period(this_year, m)));
                }
                return None;
            }
            // on <weekday>, or a weekday alone: the last one before today.
            let (skip, wd_word) = if word == "on" {
                (1, at(i + 1))
            } else {
                (0, word)
            };
            if let Some(wd) = WEEKDAYS.iter().position(|d| *d == wd_word) {
                let back = (weekday(today) - wd as i64 - 1).rem_euclid(7) + 1;
                return Some((skip + 1, days(today - back, 1)));
            }
            if let Some(p) = iso_date(word) {
                return Some((1, p));
            }
            // 3 March 2025 / 3rd of March / the 3rd of March.
            let (lead, d_word) = if word == "the" {
                (1, at(i + 1))
            } else {
                (0, word)
            };
            if let Some(d) = day_of_month(d_word) {
                let of = usize::from(at(i + lead + 1) == "of");
                if let Some(m) = month(at(i + lead + 1 + of)) {
                    let took = lead + 2 + of;
                    return match year(at(i + took)) {
                        Some(y) => date(y, m, d).map(|p| (took + 1, p)),
                        None => date(this_year, m, d).map(|p| (took, p)),
                    };
                }
                return None;
            }
            // March 3rd, 2025 / March 3 / March 2025.
            if let Some(m) = month(word) {
                if let Some(y) = year(at(i + 1)) {
                    return Some((2, month_period(y, m)));
                }
                if let Some(d) = day_of_month(at(i + 1)) {
                    return match year(at(i + 2)) {
                        Some(y) => date(y, m, d).map(|p| (3, p)),
                        None => date(this_year, m, d).map(|p| (2, p)),
                    };
                }
            }
            None
        })();
        match found {
            Some((took, (start, end))) => {
                let (first, last) = (&w[i], &w[i + took - 1]);
                out.push(When {
                    text: text[first.start..last.end].to_string(),
                    start,
                    end,
                });
                i += took;
            }
            None => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wednesday 2025-03-12, 15:00 UTC.
    const SAID: i64 = 1_741_791_600_000;

    fn day(y: i64, m: i64, d: i64) -> (i64, i64) {
        days(days_from_civil(y, m, d), 1)
    }

    fn one(text: &str) -> (String, (i64, i64)) {
        let found = times(text, SAID);
        assert_eq!(found.len(), 1, "{text:?}: {found:?}");
        (found[0].text.clone(), (found[0].start, found[0].end))
    }

    #[test]
    fn the_calendar_is_right() {
        assert_eq!(civil_from_days(SAID / DAY_MS), (2025, 3, 12));
        assert_eq!(weekday(SAID / DAY_MS), 2, "a Wednesday");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2025, 2), 28);
        assert_eq!(add_months(2025, 11, 3), (2026, 2));
        for z in [-800_000, -1, 0, 59, 10_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn what_each_rule_places() {
        for (text, words, period) in [
            ("I saw her yesterday.", "yesterday", day(2025, 3, 11)),
            ("Call me tomorrow", "tomorrow", day(2025, 3, 13)),
            ("done today", "today", day(2025, 3, 12)),
            ("this morning it rained", "this morning", day(2025, 3, 12)),
            (
                "the day before yesterday we met",
                "the day before yesterday",
                day(2025, 3, 10),
            ),
            ("last Tuesday we met", "last Tuesday", day(2025, 3, 4)),
            ("this Friday", "this Friday", day(2025, 3, 14)),
            ("next Monday works", "next Monday", day(2025, 3, 17)),
            ("we spoke on Monday", "on Monday", day(2025, 3, 10)),
            ("Wednesday was long", "Wednesday", day(2025, 3, 5)),
            (
                "last week",
                "last week",
                days(days_from_civil(2025, 3, 3), 7),
            ),
            ("next month", "next month", month_period(2025, 4)),
            ("last year", "last year", year_period(2024)),
            (
                "last weekend",
                "last weekend",
                days(days_from_civil(2025, 3, 8), 2),
            ),
            ("3 days ago", "3 days ago", day(2025, 3, 9)),
            (
                "two weeks ago",
                "two weeks ago",
                days(days_from_civil(2025, 2, 24), 7),
            ),
            (
                "in two weeks",
                "in two weeks",
                days(days_from_civil(2025, 3, 24), 7),
            ),
            ("in a month", "in a month", month_period(2025, 4)),
            ("moved in 2019", "in 2019", year_period(2019)),
            ("on 3 March 2024", "3 March 2024", day(2024, 3, 3)),
            ("March 3rd, 2024", "March 3rd, 2024", day(2024, 3, 3)),
            ("the 21st of June", "the 21st of June", day(2025, 6, 21)),
            ("by March 30", "March 30", day(2025, 3, 30)),
            ("since Feb 2", "Feb 2", day(2025, 2, 2)),
            ("back in May", "in May", month_period(2025, 5)),
            ("in March 2023", "in March 2023", month_period(2023, 3)),
            ("back in June", "in June", month_period(2025, 6)),
            ("released 2024-02-29", "2024-02-29", day(2024, 2, 29)),
        ] {
            assert_eq!(one(text), (words.to_string(), period), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_a_time() {
        for text in [
            "we sold 2019 units",
            "the 31st of February",
            "2025-02-30 is no date",
            "may I ask",
            "last call for the project",
            "in 3 bananas",
            "a mar on the table",
        ] {
            assert!(
                times(text, SAID).is_empty(),
                "{text:?}: {:?}",
                times(text, SAID)
            );
        }
    }

    #[test]
    fn several_in_order_and_bounded() {
        let found = times("yesterday, and last Friday, and next week", SAID);
        let texts: Vec<&str> = found.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["yesterday", "last Friday", "next week"]);
        assert_eq!(times(&"today ".repeat(100), SAID).len(), MAX_TIMES);
    }
}
