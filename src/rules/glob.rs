//! Glob matching (`*` any run of characters, `?` one character): the scripts' `glob`
//! helpers, the rule index's username and group globs, and the pipeline's silences.
//!
//! Owns the matcher only; calls nothing.

/// Glob match where `*` matches any run of characters and `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // The common shapes without allocating: a literal, `prefix*`, `*suffix`.
    let wild = |s: &str| s.contains(['*', '?']);
    if !wild(pattern) {
        return pattern == text;
    }
    if let Some(prefix) = pattern.strip_suffix('*').filter(|p| !wild(p)) {
        return text.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*').filter(|s| !wild(s)) {
        return text.ends_with(suffix);
    }
    glob_match_chars(pattern, text)
}

/// Any glob, char by char, with backtracking on the last `*`.
fn glob_match_chars(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    pi = bp + 1;
                    ti = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match("kube-*", "kube-system"));
        assert!(glob_match("*-system", "kube-system"));
        assert!(glob_match("k?be-*m", "kube-system"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("kube-*", "default"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*", "xxaybzb"));
    }

    #[test]
    fn glob_shortcuts_decide_as_the_general_matcher() {
        let patterns = [
            "",
            "*",
            "**",
            "?",
            "a",
            "ab",
            "a*",
            "*a",
            "a*b",
            "*a*",
            "a?",
            "?a",
            "é*",
            "*é",
            "system:*",
            "*:anonymous",
            "system:serviceaccount:*:*",
        ];
        let texts = [
            "",
            "a",
            "ab",
            "ba",
            "aab",
            "é",
            "éa",
            "aé",
            "system:anonymous",
            "system:",
            "system:serviceaccount:kube-system:default",
            "*",
            "a*",
        ];
        for p in patterns {
            for t in texts {
                assert_eq!(glob_match(p, t), glob_match_chars(p, t), "{p:?} on {t:?}");
            }
        }
    }
}
