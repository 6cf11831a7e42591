//! Glob-style patterns, as `KEYS` and `CONFIG GET` match them.
//!
//! This is redis's `stringmatchlen` (util.c) carried over rule for rule, quirks included, so a
//! pattern selects the same keys here as on redis-server:
//!
//! - `*` matches any run of bytes, `?` any one byte;
//! - `[abc]` one of a set, `[^abc]` anything but, `[a-z]` a range (reversed ranges work too),
//!   `\x` inside a set is `x` taken literally; an unterminated `[` ends the set at the pattern's
//!   end;
//! - `\x` elsewhere is `x` taken literally; a trailing lone `\` matches a `\`;
//! - the empty string is matched only by the empty pattern (not even by `*`).
//!
//! Patterns come from clients, so matching is bounded: redis's early exit after a failed `*`
//! (no longer match for an earlier `*` can succeed where a later one failed) keeps patterns like
//! `a*a*a*a*b` linear-ish, and recursion is capped at [`MAX_GLOB_NESTING`] `*`s deep.

/// How many `*` wildcards deep matching may recurse before it gives up and reports no match, as
/// redis does since 7.0.9 (CVE-2022-36021). Also bounds the stack a pattern can use.
pub const MAX_GLOB_NESTING: usize = 1000;

/// Whether `string` matches glob `pattern`, byte for byte.
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    matches(pattern, string, false, &mut skip_longer, 0)
}

/// Whether `string` matches glob `pattern`, ignoring ASCII case (what `CONFIG GET` uses).
pub fn glob_match_nocase(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    matches(pattern, string, true, &mut skip_longer, 0)
}

fn matches(
    mut pattern: &[u8],
    mut string: &[u8],
    nocase: bool,
    skip_longer: &mut bool,
    nesting: usize,
) -> bool {
    if nesting > MAX_GLOB_NESTING {
        return false;
    }
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    // The C code reads one byte past the pattern's end and finds its NUL terminator; `at`
    // answers 0 there too, which keeps the translation line for line.
    let at = |p: &[u8], i: usize| p.get(i).copied().unwrap_or(0);

    while !pattern.is_empty() && !string.is_empty() {
        match pattern[0] {
            b'*' => {
                while at(pattern, 1) == b'*' {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !string.is_empty() {
                    if matches(&pattern[1..], string, nocase, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    string = &string[1..];
                }
                // The rest of the pattern matched nowhere in the rest of the string; an earlier
                // `*` taking more bytes would only leave it less room, so every caller may stop.
                *skip_longer = true;
                return false;
            }
            b'?' => string = &string[1..],
            b'[' => {
                pattern = &pattern[1..];
                let negate = at(pattern, 0) == b'^';
                if negate {
                    pattern = &pattern[1..];
                }
                let c = fold(string[0]);
                let mut matched = false;
                loop {
                    if at(pattern, 0) == b'\\' && pattern.len() >= 2 {
                        pattern = &pattern[1..];
                        if pattern[0] == string[0] {
                            matched = true;
                        }
                    } else if pattern.is_empty() {
                        // An unterminated set ends at the pattern's end. Redis steps back one
                        // byte here so that the shared step below lands exactly on the end.
                        break;
                    } else if pattern[0] == b']' {
                        break;
                    } else if pattern.len() >= 3 && pattern[1] == b'-' {
                        let (mut start, mut end) = (fold(pattern[0]), fold(pattern[2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        pattern = &pattern[2..];
                        if (start..=end).contains(&c) {
                            matched = true;
                        }
                    } else if fold(pattern[0]) == c {
                        matched = true;
                    }
                    pattern = &pattern[1..];
                }
                if matched == negate {
                    return false;
                }
                string = &string[1..];
            }
            first => {
                let literal = if first == b'\\' && pattern.len() >= 2 {
                    pattern = &pattern[1..];
                    pattern[0]
                } else {
                    first
                };
                if fold(literal) != fold(string[0]) {
                    return false;
                }
                string = &string[1..];
            }
        }
        // The step past the pattern byte just used; an unterminated set already stands at the
        // end, where redis's step back and forth cancels out.
        if !pattern.is_empty() {
            pattern = &pattern[1..];
        }
        if string.is_empty() {
            while at(pattern, 0) == b'*' {
                pattern = &pattern[1..];
            }
            break;
        }
    }
    pattern.is_empty() && string.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, string: &str, expected: bool) {
        assert_eq!(
            glob_match(pattern.as_bytes(), string.as_bytes()),
            expected,
            "{pattern:?} against {string:?}"
        );
    }

    #[test]
    fn literals_and_wildcards() {
        check("", "", true);
        check("", "a", false);
        check("a", "", false);
        // Redis's loop never runs for an empty string, so nothing but the empty pattern matches
        // it (`KEYS *` still lists an empty key: redis, and the KEYS commands here, special-case
        // the pattern `*` before matching).
        check("*", "", false);
        check("*", "anything", true);
        check("**", "x", true);
        check("abc", "abc", true);
        check("abc", "abd", false);
        check("abc", "abcd", false);
        check("a*", "a", true);
        check("a*", "abc", true);
        check("a*", "ba", false);
        check("*c", "abc", true);
        check("a*c", "ac", true);
        check("a*c", "abbbc", true);
        check("a*c", "abbbd", false);
        check("a*b*c", "axxbyyc", true);
        check("a*b*c", "axxcyyb", false);
        check("?", "a", true);
        check("?", "", false);
        check("??", "a", false);
        check("h?llo", "hello", true);
        check("h?llo", "hllo", false);
        check("user:*:name", "user:42:name", true);
        check("user:*:name", "user:42:age", false);
    }

    #[test]
    fn sets_and_ranges() {
        check("h[ae]llo", "hello", true);
        check("h[ae]llo", "hallo", true);
        check("h[ae]llo", "hillo", false);
        check("h[^e]llo", "hallo", true);
        check("h[^e]llo", "hello", false);
        check("h[a-b]llo", "hbllo", true);
        check("h[a-b]llo", "hcllo", false);
        check("h[b-a]llo", "hallo", true);
        check("[a-]", "-", false);
        check("[a-]", "a", true);
        check("[]]", "]", false);
        check("[\\]]", "]", true);
        check("[\\-]", "-", true);
        check("[abc", "a", true);
        check("[abc", "b", true);
        check("[abc", "d", false);
        check("x[abc", "xa", true);
        check("[^", "a", true);
        check("[", "a", false);
    }

    #[test]
    fn escapes() {
        check("\\*", "*", true);
        check("\\*", "a", false);
        check("a\\?", "a?", true);
        check("a\\?", "ab", false);
        check("\\[a]", "[a]", true);
        check("\\", "\\", true);
        check("a\\", "a\\", true);
    }

    #[test]
    fn trailing_stars_match_the_empty_rest() {
        check("a**", "a", true);
        check("a*?", "a", false);
        check("a*?", "ab", true);
    }

    #[test]
    fn nocase_folds_ascii() {
        assert!(glob_match_nocase(b"SAVE", b"save"));
        assert!(glob_match_nocase(b"s*", b"SAVE"));
        assert!(glob_match_nocase(b"[A-C]*", b"appendonly"));
        assert!(!glob_match(b"SAVE", b"save"));
    }

    #[test]
    fn binary_bytes() {
        assert!(glob_match(b"\xff*", b"\xff\x00"));
        assert!(glob_match(b"?", b"\x00"));
        assert!(!glob_match(b"a", b"\x00"));
    }

    #[test]
    fn abusive_patterns_stay_fast() {
        let string = "a".repeat(10_000);
        let start = std::time::Instant::now();
        check("a*a*a*a*a*a*a*a*a*a*a*a*b", &string, false);
        check(&"*".repeat(20_000), &string, true);
        check(&"a*".repeat(500), &string, true);
        check(&format!("{}b", "a*".repeat(500)), &string, false);
        // Deeper than redis allows: no match, quickly, as redis answers.
        check(&"a*".repeat(2_000), &string, false);
        assert!(start.elapsed().as_secs() < 2, "took {:?}", start.elapsed());
    }
}
