//! The rules, in the order they claim text: an earlier rule's span is not
//! looked at again (an email is not also a name, a path not also code).
//!
//! | kind           | what                                                              |
//! |----------------|-------------------------------------------------------------------|
//! | `code`         | `` `backticked` `` spans; `snake_case`, `camelCase`, `a::b`, `f()` |
//! | `quote`        | "quoted" or “quoted” spans of 1–8 words                           |
//! | `url`          | `http://`, `https://`, `www.` links                               |
//! | `email`        | `name@domain.tld`                                                 |
//! | `handle`       | `@name`                                                           |
//! | `id`           | `PROJ-123`, `#123`, UUIDs, hex hashes of 7+ digits with letters   |
//! | `path`         | `/abs/path`, `./rel`, `~/x`, `C:\x`, `dir/file.ext`, `file.toml`  |
//! | `person`       | a name after `Mr`, `Ms`, `Dr`, `Prof`…                            |
//! | `organization` | a name starting or ending with `Inc`, `University`, `Bank`…       |
//! | `name`         | other runs of capitalised words (`Bank of America`, `NASA`)       |
//!
//! A sentence's first word counts as a name only if it is not a common
//! English word ("Alice prefers tea" names Alice; "Remember to call Bob"
//! names Bob only). Weekdays and months are times, not names. Redaction
//! placeholders (`[EMAIL]`, `[REDACTED]`) are skipped: the extractor sees
//! what the namespace stores. `#tags` become tags, lowercase.

/// Most entities one text yields.
pub const MAX_ENTITIES: usize = 64;
/// Most tags one text yields.
pub const MAX_TAGS: usize = 32;
/// Longest name kept (characters).
pub const MAX_NAME: usize = 100;

/// Something the text names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// As written (trimmed).
    pub name: String,
    /// One of the kinds in the table above.
    pub kind: &'static str,
}

/// What one text yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Entities, each once (by name, case-insensitively), in order.
    pub entities: Vec<Named>,
    /// Tags, lowercase, each once, in order.
    pub tags: Vec<String>,
}

impl Found {
    fn add(&mut self, name: &str, kind: &'static str) {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return;
        }
        let full = self.entities.len() >= MAX_ENTITIES;
        match self
            .entities
            .iter_mut()
            .find(|e| e.name.eq_ignore_ascii_case(name))
        {
            // A later, more telling kind wins over a plain name.
            Some(e) if e.kind == "name" => e.kind = kind,
            Some(_) => {}
            None if !full => self.entities.push(Named {
                name: name.to_string(),
                kind,
            }),
            None => {}
        }
    }

    fn tag(&mut self, tag: &str) {
        let tag = tag.to_lowercase();
        if !tag.is_empty() && !self.tags.contains(&tag) && self.tags.len() < MAX_TAGS {
            self.tags.push(tag);
        }
    }
}

/// Everything the rules find in `text`.
pub fn scan(text: &str) -> Found {
    let mut found = Found::default();
    let mut claimed: Vec<(usize, usize)> = Vec::new();
    for (open, close, kind) in [('`', '`', "code"), ('"', '"', "quote"), ('“', '”', "quote")] {
        for (start, end, inner) in delimited(text, open, close) {
            if claimed.iter().any(|c| overlaps(*c, (start, end))) {
                continue;
            }
            let words = inner.split_whitespace().count();
            if kind == "code" || (1..=8).contains(&words) {
                found.add(inner, kind);
                claimed.push((start, end));
            }
        }
    }
    let tokens = tokens(text, &claimed);
    let mut run: Vec<&Token<'_>> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if let Some(kind) = shape(t.word) {
            finish(&mut run, &tokens, &mut found);
            match kind {
                Shape::Tag(tag) => found.tag(tag),
                Shape::Placeholder => {}
                Shape::Entity(kind) => found.add(t.word, kind),
            }
            continue;
        }
        let capitalised = is_capitalised(t.word);
        let joins = !run.is_empty()
            && CONNECTORS.contains(&t.word)
            && !t.ends_clause
            && tokens.get(i + 1).is_some_and(|n| is_capitalised(n.word));
        if capitalised || joins {
            run.push(t);
            if t.ends_clause && !is_honorific(t.word) {
                finish(&mut run, &tokens, &mut found);
            }
        } else {
            finish(&mut run, &tokens, &mut found);
        }
    }
    finish(&mut run, &tokens, &mut found);
    found
}

/// A word of the text: trimmed of surrounding punctuation, with its place.
#[derive(Debug)]
struct Token<'a> {
    word: &'a str,
    /// Index in the token list.
    at: usize,
    /// First word of a sentence.
    starts_sentence: bool,
    /// Punctuation after it ends a clause (`,` `.` `;` `:` `!` `?` `)`).
    ends_clause: bool,
}

fn tokens<'a>(text: &'a str, claimed: &[(usize, usize)]) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    let mut offset = 0;
    for raw in text.split_inclusive(char::is_whitespace) {
        let start = offset;
        offset += raw.len();
        let newline = raw.ends_with('\n');
        let raw = raw.trim_end();
        if raw.is_empty() {
            sentence_start |= newline;
            continue;
        }
        if claimed
            .iter()
            .any(|c| overlaps(*c, (start, start + raw.len())))
        {
            sentence_start = newline;
            continue;
        }
        let bare = raw
            .trim_start_matches(['(', '[', '{', '<', '\'', '‘', '«'])
            .trim_end_matches(['.', ',', ';', ':', '!', '?']);
        // `call()` keeps its parentheses; other closing marks go.
        let word = if bare.ends_with("()") {
            bare
        } else {
            bare.trim_end_matches([
                ')', ']', '}', '>', '\'', '’', '»', '.', ',', ';', ':', '!', '?',
            ])
        };
        let word = word
            .strip_suffix("'s")
            .or_else(|| word.strip_suffix("’s"))
            .unwrap_or(word);
        // A placeholder keeps its brackets so it is recognised as one.
        let word =
            if raw.starts_with('[') && raw.trim_end_matches(['.', ',', ';', ':']).ends_with(']') {
                raw.trim_end_matches(['.', ',', ';', ':'])
            } else {
                word
            };
        let tail = raw.chars().next_back().unwrap_or(' ');
        let ends_sentence = matches!(tail, '.' | '!' | '?') && !is_honorific(word);
        if !word.is_empty() {
            out.push(Token {
                word,
                at: out.len(),
                starts_sentence: sentence_start,
                ends_clause: matches!(tail, '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']'),
            });
        }
        sentence_start = ends_sentence || newline;
    }
    out
}

enum Shape<'a> {
    Tag(&'a str),
    Placeholder,
    Entity(&'static str),
}

/// What a single word is, when it is not plain prose.
fn shape(word: &str) -> Option<Shape<'_>> {
    let lower = word.to_ascii_lowercase();
    if word.starts_with('[') && word.ends_with(']') && word.len() > 2 {
        let inner = &word[1..word.len() - 1];
        return inner
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c == ' ' || c == ':')
            .then_some(Shape::Placeholder);
    }
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("www.") {
        return Some(Shape::Entity("url"));
    }
    if let Some(rest) = word.strip_prefix('#') {
        if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()) {
            return Some(Shape::Entity("id"));
        }
        if rest.chars().next().is_some_and(char::is_alphabetic)
            && rest
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Some(Shape::Tag(rest));
        }
    }
    if let Some(rest) = word.strip_prefix('@') {
        return (rest.chars().count() >= 2
            && rest.chars().next().is_some_and(char::is_alphanumeric)
            && rest
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .then_some(Shape::Entity("handle"));
    }
    if let Some((local, domain)) = word.split_once('@') {
        let dotted = domain
            .rsplit_once('.')
            .is_some_and(|(host, tld)| !host.is_empty() && tld.len() >= 2);
        if !local.is_empty() && dotted && !domain.contains('@') {
            return Some(Shape::Entity("email"));
        }
    }
    if is_id(word) {
        return Some(Shape::Entity("id"));
    }
    if is_path(word) {
        return Some(Shape::Entity("path"));
    }
    if is_code(word) {
        return Some(Shape::Entity("code"));
    }
    None
}

fn is_id(word: &str) -> bool {
    // PROJ-123
    if let Some((key, number)) = word.split_once('-')
        && key.len() >= 2
        && key.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
    {
        return true;
    }
    // A UUID.
    let groups: Vec<&str> = word.split('-').collect();
    if groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return true;
    }
    // A hash: hex, with digits and letters both (a plain number is none).
    word.len() >= 7
        && word
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
}

/// File extensions a bare `name.ext` is taken as a file for.
const EXTENSIONS: &[&str] = &[
    "c", "cfg", "conf", "cpp", "css", "csv", "go", "h", "html", "ini", "java", "js", "json",
    "lock", "log", "md", "pdf", "php", "py", "rb", "rs", "sh", "sql", "toml", "ts", "tsx", "txt",
    "wasm", "wit", "xml", "yaml", "yml", "zip",
];

fn is_path(word: &str) -> bool {
    let rooted = ["/", "./", "../", "~/"]
        .iter()
        .any(|p| word.starts_with(p) && word.len() > p.len())
        || word.get(1..3) == Some(":\\");
    let fileish = |last: &str| {
        last.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && EXTENSIONS.contains(&ext)
                && stem
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
    };
    let last = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let valid = word
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '/' | '\\' | '.' | '_' | '-' | '~' | ':'));
    valid && (rooted || fileish(last))
}

fn is_code(word: &str) -> bool {
    let body = word.strip_suffix("()").unwrap_or(word);
    let identifier = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    if body.contains("::") || body.contains('.') {
        let parts: Vec<&str> = body.split("::").flat_map(|p| p.split('.')).collect();
        return parts.len() >= 2
            && parts.iter().all(|p| identifier(p))
            && (body.contains("::") || word.ends_with("()"));
    }
    if !identifier(body) {
        return false;
    }
    let snake = body.trim_matches('_').contains('_') && body.chars().any(char::is_alphabetic);
    let camel = body.chars().next().is_some_and(char::is_lowercase)
        && body.chars().skip(1).any(char::is_uppercase);
    snake || camel || (word.ends_with("()") && !body.is_empty())
}

fn is_capitalised(word: &str) -> bool {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_uppercase()
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '\'' | '’' | '-' | '&' | '.'))
        && (word.chars().count() > 1 || first != 'I')
}

fn is_honorific(word: &str) -> bool {
    HONORIFICS.contains(&word.trim_end_matches('.').to_ascii_lowercase().as_str())
}

/// Turn a run of capitalised words into an entity, if it is one.
fn finish(run: &mut Vec<&Token<'_>>, tokens: &[Token<'_>], found: &mut Found) {
    let words = std::mem::take(run);
    let mut words: &[&Token<'_>] = &words;
    let mut kind = "name";
    // Honorifics name a person and are not part of the name.
    if let Some(before) = words
        .first()
        .and_then(|t| t.at.checked_sub(1))
        .and_then(|i| tokens.get(i))
        && is_honorific(before.word)
    {
        kind = "person";
    }
    while let Some((first, rest)) = words.split_first() {
        let lower = first.word.to_lowercase();
        let common = COMMON.binary_search(&lower.as_str()).is_ok();
        if is_honorific(first.word) {
            kind = "person";
            words = rest;
        } else if (common && (first.starts_sentence || DETERMINERS.contains(&lower.as_str())))
            || CONNECTORS.contains(&first.word)
        {
            words = rest;
        } else {
            break;
        }
    }
    while let Some((last, rest)) = words.split_last() {
        if CONNECTORS.contains(&last.word) {
            words = rest;
        } else {
            break;
        }
    }
    let [first, ..] = words else {
        return;
    };
    if words.len() == 1 {
        let lower = first.word.to_lowercase();
        if crate::when::is_time_word(&lower)
            || (first.starts_sentence && COMMON.binary_search(&lower.as_str()).is_ok())
        {
            return;
        }
    }
    let organization = |t: &&Token<'_>| ORGANIZATION_WORDS.contains(&t.word.trim_end_matches('.'));
    if words.len() > 1
        && (words.first().is_some_and(organization) || words.last().is_some_and(organization))
    {
        kind = "organization";
    }
    let name: Vec<&str> = words.iter().map(|t| t.word).collect();
    found.add(&name.join(" "), kind);
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// `open … close` spans on one line: (start, end, inner text).
fn delimited(text: &str, open: char, close: char) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(open).map(|i| from + i) {
        let inner_start = i + open.len_utf8();
        let Some(j) = text[inner_start..].find(close).map(|j| inner_start + j) else {
            break;
        };
        let inner = &text[inner_start..j];
        let end = j + close.len_utf8();
        if !inner.trim().is_empty() && !inner.contains('\n') && inner.chars().count() <= 80 {
            out.push((i, end, inner.trim()));
            from = end;
        } else {
            // Not a span: the closing mark may open the next one.
            from = inner_start;
        }
    }
    out
}

/// Lowercase words that may join two capitalised ones (`Bank of America`);
/// not `and`, which mostly lists names (`Alice and Bob`).
const CONNECTORS: &[&str] = &[
    "of", "de", "del", "der", "den", "di", "da", "du", "la", "le", "van", "von", "y", "&",
];

const HONORIFICS: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "mx",
    "dr",
    "prof",
    "sir",
    "dame",
    "madam",
    "miss",
    "mister",
    "professor",
];

/// A name that starts or ends with one of these is an organization's.
const ORGANIZATION_WORDS: &[&str] = &[
    "Inc",
    "Corp",
    "Corporation",
    "Ltd",
    "LLC",
    "GmbH",
    "AG",
    "SA",
    "PLC",
    "Co",
    "Company",
    "University",
    "College",
    "Institute",
    "Foundation",
    "Bank",
    "Group",
    "Labs",
    "Agency",
    "Department",
    "Ministry",
    "Council",
    "Committee",
    "Association",
    "Society",
    "Hospital",
];

/// Days that are times, not names (weekdays and months are too).
pub(crate) const TIMES: &[&str] = &["today", "tomorrow", "yesterday", "tonight"];

/// Dropped from the front of a run anywhere, not only at a sentence start.
const DETERMINERS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "my", "our", "your", "his", "her", "their",
    "its", "every", "each", "some", "any", "no",
];

/// Common English words (sorted), and the verbs and nouns notes start
/// sentences with: capitalised at a sentence start they are not names.
#[rustfmt::skip]
const COMMON: &[&str] = &[
    "a", "about", "above", "add", "added", "adding", "after", "again", "against", "agree",
    "all", "allow", "already", "also", "although", "always", "am", "an", "and", "another",
    "any", "anyone", "anything", "anyway", "apply", "approve", "are", "arrange", "as", "ask",
    "at", "attach", "avoid", "back", "bake", "be", "because", "been", "before", "being",
    "below", "best", "better", "between", "book", "both", "bought", "bring", "but", "buy", "by",
    "call", "can", "cancel", "change", "chat", "check", "choose", "clean", "close", "come",
    "confirm", "consider", "continue", "cook", "copy", "could", "create", "daily", "dear",
    "decide", "delete", "deploy", "did", "dinner", "discuss", "do", "does", "doing", "don't",
    "done", "down", "draft", "drink", "drop", "during", "each", "eat", "either", "else",
    "email", "emailed", "enjoy", "even", "ever", "every", "everybody", "everyone", "everything",
    "expect", "explain", "feel", "fill", "finally", "find", "fine", "finish", "first", "fix",
    "follow", "for", "forget", "found", "from", "get", "give", "go", "going", "good", "got",
    "great", "had", "happy", "has", "have", "he", "hello", "her", "here", "hers", "hey", "hi",
    "him", "his", "hope", "how", "however", "i", "i'd", "i'll", "i'm", "i've", "idea", "if",
    "important", "in", "include", "install", "instead", "invite", "is", "it", "it's", "its",
    "join", "just", "keep", "kept", "know", "knows", "last", "later", "learn", "leave", "let",
    "let's", "like", "likes", "lunch", "mail", "mailed", "make", "many", "maybe", "me", "meet",
    "meeting", "merge", "message", "more", "most", "move", "moved", "much", "must", "my",
    "need", "never", "new", "next", "no", "none", "nor", "not", "note", "noted", "notes",
    "nothing", "now", "of", "off", "ok", "okay", "on", "once", "one", "only", "open", "or",
    "order", "organize", "other", "our", "ours", "out", "over", "pack", "pay", "pick", "plan",
    "planned", "plans", "please", "post", "prefer", "prefers", "print", "put", "read", "ready",
    "really", "remember", "reminder", "reply", "report", "request", "reserve", "reset",
    "review", "run", "said", "same", "save", "schedule", "see", "sell", "send", "set", "share",
    "she", "ship", "should", "show", "sign", "since", "skip", "so", "some", "someone",
    "something", "sometimes", "soon", "start", "started", "still", "stop", "submit", "such",
    "suggest", "sure", "take", "talk", "task", "tasks", "tell", "test", "tested", "text",
    "than", "thank", "thanks", "that", "the", "their", "them", "then", "there", "these", "they",
    "think", "thinks", "this", "those", "though", "through", "to", "todo", "told", "too",
    "track", "trip", "try", "turn", "under", "until", "up", "update", "upgrade", "upload",
    "urgent", "us", "use", "usually", "very", "visit", "wait", "want", "wants", "was", "watch",
    "we", "well", "went", "were", "what", "when", "where", "whether", "which", "while", "who",
    "why", "will", "with", "without", "would", "write", "wrote", "yeah", "yes", "yet", "you",
    "your", "yours",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn named(text: &str) -> Vec<(String, &'static str)> {
        scan(text)
            .entities
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect()
    }

    fn has(text: &str, name: &str, kind: &str) {
        let all = named(text);
        assert!(
            all.iter().any(|(n, k)| n == name && *k == kind),
            "{name} ({kind}) not found in {text:?}: {all:?}"
        );
    }

    fn lacks(text: &str, name: &str) {
        let all = named(text);
        assert!(
            !all.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)),
            "{name} found in {text:?}: {all:?}"
        );
    }

    #[test]
    fn common_words_are_sorted_for_the_binary_search() {
        assert!(COMMON.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn what_each_rule_finds() {
        for (text, name, kind) in [
            // Names, mid-sentence and multi-word.
            (
                "we met Ada Lovelace at the Bank of America office",
                "Ada Lovelace",
                "name",
            ),
            (
                "we met Ada Lovelace at the Bank of America office",
                "Bank of America",
                "organization",
            ),
            ("lunch with Bob tomorrow", "Bob", "name"),
            ("the deal with NASA closed", "NASA", "name"),
            ("ask Dr. Grace Hopper about it", "Grace Hopper", "person"),
            ("she joined Acme Inc. last year", "Acme Inc", "organization"),
            ("Bob's laptop is broken", "Bob", "name"),
            // A sentence's first word, when it is no common word.
            ("Alice prefers green tea.", "Alice", "name"),
            ("Remember to call Bob.", "Bob", "name"),
            ("The Beatles played here", "Beatles", "name"),
            // Contacts, links and ids.
            ("mail ada@example.org now", "ada@example.org", "email"),
            (
                "see https://memhost.dev/docs.",
                "https://memhost.dev/docs",
                "url",
            ),
            ("ping @grace_h about it", "@grace_h", "handle"),
            ("blocked by PROJ-1423 and #88", "PROJ-1423", "id"),
            ("blocked by PROJ-1423 and #88", "#88", "id"),
            ("fixed in 3f9c2ab", "3f9c2ab", "id"),
            (
                "row 0190c0de-1234-7000-8000-00000000abcd",
                "0190c0de-1234-7000-8000-00000000abcd",
                "id",
            ),
            // Code and paths.
            ("call `Store::open` first", "Store::open", "code"),
            ("set max_retries to 3", "max_retries", "code"),
            ("getUserName returns it", "getUserName", "code"),
            ("then run build() again", "build()", "code"),
            (
                "edit /etc/memhost/memhost.toml",
                "/etc/memhost/memhost.toml",
                "path",
            ),
            ("see src/main.rs and plugin.toml", "src/main.rs", "path"),
            ("see src/main.rs and plugin.toml", "plugin.toml", "path"),
            // Quotes.
            (
                "she loved \"The Left Hand of Darkness\"",
                "The Left Hand of Darkness",
                "quote",
            ),
            ("he said “ship it”", "ship it", "quote"),
        ] {
            has(text, name, kind);
        }
    }

    #[test]
    fn what_no_rule_takes() {
        for (text, not) in [
            ("Remember to call Bob.", "Remember"),
            ("Mail Bob the draft.", "Mail"),
            ("The meeting moved. Please check.", "The"),
            ("The meeting moved. Please check.", "Please"),
            ("I think so", "I"),
            ("see you on Monday", "Monday"),
            ("due in March", "March"),
            ("it costs 1234567 dollars", "1234567"),
            ("an email like bob@localhost", "bob@localhost"),
            ("and/or either way", "and/or"),
            ("e.g. this", "e.g"),
        ] {
            lacks(text, not);
        }
        let all = named("Paris, London and Rome");
        assert_eq!(
            all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["Paris", "London", "Rome"]
        );
    }

    #[test]
    fn quotes_tags_and_placeholders() {
        has(
            "she loved \"The Left Hand of Darkness\"",
            "The Left Hand of Darkness",
            "quote",
        );
        has("he said “ship it”", "ship it", "quote");
        let found = scan("standup notes #Planning #q3 #planning");
        assert_eq!(found.tags, ["planning", "q3"]);
        assert!(found.entities.is_empty(), "{:?}", found.entities);
        let found = scan("write to [EMAIL] or call [PHONE], said [REDACTED]");
        assert!(found.entities.is_empty(), "{:?}", found.entities);
    }

    #[test]
    fn each_name_once_and_bounded() {
        let text = "Bob met bob and BOB. ".repeat(3);
        assert_eq!(named(&text).len(), 1);
        let many: String = (0..200).map(|i| format!("user_{i} ")).collect();
        assert_eq!(scan(&many).entities.len(), MAX_ENTITIES);
        let tags: String = (0..100).map(|i| format!("#t{i} ")).collect();
        assert_eq!(scan(&tags).tags.len(), MAX_TAGS);
        let long = format!("`{}`", "x".repeat(79));
        assert_eq!(scan(&long).entities.len(), 1);
    }
}
