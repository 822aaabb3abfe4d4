//! Pure parsers for policy values: durations, sizes, weights, names, query
//! templates and label matchers. Each returns the exact user-facing message.

use std::time::Duration;

use super::raw::Scalar;
use super::types::{CanarySize, LabelMatcher, MatchOp, TEMPLATE_VARIABLES};

/// RFC 1123 label: namespaces, Services, Ingresses, HTTPRoutes.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: Deployments and other dotted names.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|part| !part.is_empty() && is_dns_label(part))
}

/// Label keys such as `version` or `app.kubernetes.io/version`.
pub(crate) fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// Joins choices as `a, b or c`.
pub(crate) fn choices(options: &[&str]) -> String {
    match options {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

pub(crate) const DURATION_HINT: &str = "a duration like 30s, 10m, 1h30m or 500ms";

/// Parses `1h30m`, `10m`, `30s`, `500ms`: units in descending order, each once.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected {DURATION_HINT}, found {s:?}");
    if s.is_empty() {
        return Err(bad());
    }
    if s.starts_with('-') {
        return Err(format!("duration must be positive, found {s:?}"));
    }
    // Units from largest to smallest, in milliseconds.
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let mut rest = s;
    let mut next_unit = 0;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if idx < next_unit {
            return Err(bad());
        }
        next_unit = idx + 1;
        total_ms = n
            .checked_mul(UNITS[idx].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if total_ms == 0 {
        return Err(format!("duration must be positive, found {s:?}"));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way policies write it (`1h30m`, `2m`, `500ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

pub(crate) const SIZE_HINT: &str = "a pod count like 1 or a percentage like \"10%\"";

/// Parses a canary size: a pod count (>= 1) or `N%` with 0 < N <= 100.
pub(crate) fn parse_size(v: &Scalar) -> Result<CanarySize, String> {
    match v {
        Scalar::Int(n) => pods(*n, v),
        Scalar::Str(s) => {
            let t = s.trim();
            if let Some(p) = t.strip_suffix('%') {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("expected {SIZE_HINT}, found {v}"))?;
                if p.is_finite() && p > 0.0 && p <= 100.0 {
                    Ok(CanarySize::Percent(p))
                } else {
                    Err(format!(
                        "percentage must be above 0% and at most 100%, found {v}"
                    ))
                }
            } else if let Ok(n) = t.parse::<i64>() {
                pods(n, v)
            } else {
                Err(format!("expected {SIZE_HINT}, found {v}"))
            }
        }
        other => Err(format!("expected {SIZE_HINT}, found {other}")),
    }
}

pub(crate) fn pods(n: i64, v: &Scalar) -> Result<CanarySize, String> {
    if n < 1 {
        return Err(format!("size must be at least 1 pod, found {v}"));
    }
    u32::try_from(n)
        .map(CanarySize::Replicas)
        .map_err(|_| format!("size must be at most {} pods, found {v}", u32::MAX))
}

/// A size the way policies write it (`3`, `10%`).
pub(crate) fn format_size(s: CanarySize) -> String {
    match s {
        CanarySize::Replicas(n) => n.to_string(),
        CanarySize::Percent(p) => format!("{p}%"),
    }
}

/// Parses a traffic weight: an integer 0..=100.
pub(crate) fn parse_weight(v: &Scalar) -> Result<u8, String> {
    let msg = || {
        format!("weight must be a whole number from 1 to 99 (0 sends the canary no traffic and 100 the baseline none, so such a step could never be judged; promotion moves all traffic), found {v}")
    };
    match v {
        Scalar::Int(n) => u8::try_from(*n)
            .ok()
            .filter(|w| (1..=99).contains(w))
            .ok_or_else(msg),
        _ => Err(msg()),
    }
}

/// Checks a query template: not empty, every `{{variable}}` known, and the
/// query can tell canary from baseline.
pub(crate) fn check_template(t: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if t.trim().is_empty() {
        problems.push("expected a PromQL query, found an empty string".to_owned());
        return problems;
    }
    let mut rest = t;
    // An unknown variable is usually a misspelt {{podRegex}}; say that once.
    let mut unknown = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            problems.push(format!(
                "unclosed {{{{ in {:?}; variables are written {{{{name}}}}",
                &rest[open..]
            ));
            return problems;
        };
        let name = &after[..close];
        if !TEMPLATE_VARIABLES.contains(&name) {
            unknown = true;
            problems.push(format!(
                "unknown variable {{{{{name}}}}}; known: {}",
                TEMPLATE_VARIABLES.join(", ")
            ));
        }
        rest = &after[close + 2..];
    }
    if !unknown && !t.contains("{{podRegex}}") && !t.contains("{{role}}") {
        problems.push(
            "query uses neither {{podRegex}} nor {{role}}, so canary and baseline would read the same series"
                .to_owned(),
        );
    }
    if let Err(e) = window_increase_calls(t) {
        problems.push(e);
    }
    problems
}

/// canaryd's pseudo-function in query templates: `window_increase(SELECTOR)`
/// is replaced, when the query is rendered, by the exact increase of every
/// selected counter over the observation window (no extrapolation; counter
/// resets, new and vanished series handled). See `docs/metrics.md`.
pub const WINDOW_INCREASE: &str = "window_increase";

/// One `window_increase(SELECTOR)` call found in a query, as byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowIncreaseCall {
    /// The whole call, from `window_increase` to its closing `)`.
    pub call: std::ops::Range<usize>,
    /// The selector between the parentheses, without surrounding spaces.
    pub selector: std::ops::Range<usize>,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The index just past the string literal opening at `start` (PromQL `"…"`
/// and `'…'` with backslash escapes, raw `` `…` ``), or the end of `s`.
/// If a string literal or a `#` comment starts at `i`, the index just past it.
fn skip_literal(s: &[u8], i: usize) -> Option<usize> {
    match s[i] {
        b'"' | b'\'' | b'`' => Some(skip_string(s, i)),
        b'#' => Some(
            s[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(s.len(), |n| i + n),
        ),
        _ => None,
    }
}

fn skip_string(s: &[u8], start: usize) -> usize {
    let quote = s[start];
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// The index of the bracket closing the one at `open`, skipping strings and
/// comments; `None` if it is never closed or closed by the wrong kind.
fn matching_close(s: &[u8], open: usize) -> Option<usize> {
    let mut stack = vec![s[open]];
    let mut i = open + 1;
    while i < s.len() {
        if let Some(next) = skip_literal(s, i) {
            i = next;
            continue;
        }
        match s[i] {
            b @ (b'(' | b'{' | b'[') => stack.push(b),
            b @ (b')' | b'}' | b']') => {
                let want = match stack.pop()? {
                    b'(' => b')',
                    b'{' => b'}',
                    _ => b']',
                };
                if b != want {
                    return None;
                }
                if stack.is_empty() {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `sel` is a plain instant-vector selector: `name`, `name{…}` or `{…}`.
fn is_selector(sel: &str) -> bool {
    let b = sel.as_bytes();
    let name = b.iter().take_while(|c| is_ident_byte(**c)).count();
    if name > 0 && b[0].is_ascii_digit() {
        return false;
    }
    let rest = sel[name..].trim_start();
    if rest.is_empty() {
        return name > 0;
    }
    let r = rest.as_bytes();
    r[0] == b'{' && matching_close(r, 0) == Some(r.len() - 1)
}

/// Every `window_increase(SELECTOR)` call in `query`, in order, skipping
/// string literals and comments. An identifier `window_increase` not
/// followed by `(` (a metric of that name) is not a call.
///
/// Err: the message for the first malformed call.
pub fn window_increase_calls(query: &str) -> Result<Vec<WindowIncreaseCall>, String> {
    let s = query.as_bytes();
    let name = WINDOW_INCREASE.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if let Some(next) = skip_literal(s, i) {
            i = next;
            continue;
        }
        let at_word = i == 0 || !is_ident_byte(s[i - 1]);
        if !(at_word && s[i..].starts_with(name)) {
            i += 1;
            continue;
        }
        let after = i + name.len();
        if s.get(after).copied().is_some_and(is_ident_byte) {
            i = after;
            continue;
        }
        let open = after
            + s[after..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        if s.get(open) != Some(&b'(') {
            i = after;
            continue;
        }
        let close = matching_close(s, open)
            .ok_or_else(|| format!("{WINDOW_INCREASE}( is never closed in {:?}", &query[i..]))?;
        let inner = &query[open + 1..close];
        let sel = inner.trim();
        if !is_selector(sel) {
            let hint = if sel.ends_with(']') {
                "; it always covers the observation window, so write it without a range such as [{{window}}]"
            } else {
                ""
            };
            return Err(format!(
                "{WINDOW_INCREASE}(...) takes one counter selector such as \
                 http_requests_total{{pod=~\"{{{{podRegex}}}}\"}}, found {sel:?}{hint}"
            ));
        }
        let lead = inner.len() - inner.trim_start().len();
        calls.push(WindowIncreaseCall {
            call: i..close + 1,
            selector: open + 1 + lead..open + 1 + lead + sel.len(),
        });
        i = close + 1;
    }
    Ok(calls)
}

pub(crate) const MATCHER_HINT: &str =
    "a matcher like severity=\"critical\" (label name, then = != =~ or !~, then a quoted value)";

/// Parses a Prometheus label matcher such as `severity=~"critical|page"`.
pub(crate) fn parse_matcher(s: &str) -> Result<LabelMatcher, String> {
    let bad = || format!("expected {MATCHER_HINT}, found {s:?}");
    let t = s.trim();
    let name_len = t
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit()))
        .count();
    if name_len == 0 {
        return Err(bad());
    }
    let name = &t[..name_len];
    let rest = t[name_len..].trim_start();
    let (op, rest) = [
        ("=~", MatchOp::Re),
        ("!~", MatchOp::NotRe),
        ("!=", MatchOp::Ne),
        ("=", MatchOp::Eq),
    ]
    .iter()
    .find_map(|(tok, op)| rest.strip_prefix(tok).map(|r| (*op, r)))
    .ok_or_else(bad)?;
    let rest = rest.trim_start();
    let mut chars = rest.chars();
    let quote = chars
        .next()
        .filter(|c| *c == '"' || *c == '\'')
        .ok_or_else(bad)?;
    let mut value = String::new();
    let mut closed = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some(other) => value.push(other),
                None => return Err(bad()),
            },
            c if c == quote => {
                closed = true;
                break;
            }
            c => value.push(c),
        }
    }
    if !closed || !chars.as_str().trim().is_empty() {
        return Err(bad());
    }
    if matches!(op, MatchOp::Re | MatchOp::NotRe) {
        // Prometheus anchors matcher regexes at both ends.
        if let Err(e) = regex::Regex::new(&format!("^(?:{value})$")) {
            return Err(format!(
                "invalid regex {value:?} in matcher: {}",
                regex_reason(&e)
            ));
        }
    }
    Ok(LabelMatcher {
        name: name.to_owned(),
        op,
        value,
    })
}

/// The last line of a regex error ("unclosed group"), without its caret diagram.
pub(crate) fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or("").trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_in_order() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("10m"), Ok(600_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1m30s250ms"), Ok(90_250));
    }

    #[test]
    fn durations_reject_other_forms() {
        let hint =
            |s: &str| format!("expected a duration like 30s, 10m, 1h30m or 500ms, found {s:?}");
        for bad in [
            "10 minutes",
            "10",
            "m",
            "",
            "1.5m",
            "30m1h",
            "1m1m",
            "10M",
            "5d",
            " 5m",
        ] {
            assert_eq!(parse_duration(bad), Err(hint(bad)), "{bad:?}");
        }
        assert_eq!(
            parse_duration("-5m"),
            Err("duration must be positive, found \"-5m\"".into())
        );
        assert_eq!(
            parse_duration("0s"),
            Err("duration must be positive, found \"0s\"".into())
        );
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(hint("99999999999999999999h"))
        );
        assert_eq!(
            parse_duration("9999999999999999h"),
            Err("duration \"9999999999999999h\" is too long".into())
        );
    }

    #[test]
    fn durations_format_back() {
        for s in ["30s", "10m", "1h30m", "500ms", "1h0m1s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sizes_are_pods_or_percentages() {
        let s = |v: Scalar| parse_size(&v);
        assert_eq!(s(Scalar::Int(3)), Ok(CanarySize::Replicas(3)));
        assert_eq!(s(Scalar::Str("3".into())), Ok(CanarySize::Replicas(3)));
        assert_eq!(s(Scalar::Str("10%".into())), Ok(CanarySize::Percent(10.0)));
        assert_eq!(
            s(Scalar::Str("12.5%".into())),
            Ok(CanarySize::Percent(12.5))
        );
        assert_eq!(
            s(Scalar::Str("100%".into())),
            Ok(CanarySize::Percent(100.0))
        );
        assert_eq!(
            s(Scalar::Str("100.1%".into())),
            Err("percentage must be above 0% and at most 100%, found \"100.1%\"".into())
        );
        assert_eq!(
            s(Scalar::Str("-5%".into())),
            Err("percentage must be above 0% and at most 100%, found \"-5%\"".into())
        );
        assert_eq!(
            s(Scalar::Int(0)),
            Err("size must be at least 1 pod, found 0".into())
        );
        assert_eq!(
            s(Scalar::Int(5_000_000_000)),
            Err("size must be at most 4294967295 pods, found 5000000000".into())
        );
        assert_eq!(
            s(Scalar::Float(1.5)),
            Err("expected a pod count like 1 or a percentage like \"10%\", found 1.5".into())
        );
        assert_eq!(
            s(Scalar::Str("half".into())),
            Err("expected a pod count like 1 or a percentage like \"10%\", found \"half\"".into())
        );
        assert_eq!(
            s(Scalar::Str("NaN%".into())),
            Err("percentage must be above 0% and at most 100%, found \"NaN%\"".into())
        );
    }

    #[test]
    fn weights_are_whole_percentages() {
        assert_eq!(parse_weight(&Scalar::Int(1)), Ok(1));
        assert_eq!(parse_weight(&Scalar::Int(99)), Ok(99));
        for bad in [
            Scalar::Int(0),
            Scalar::Int(100),
            Scalar::Int(101),
            Scalar::Int(-1),
            Scalar::Float(5.5),
        ] {
            assert_eq!(
                parse_weight(&bad),
                Err(format!("weight must be a whole number from 1 to 99 (0 sends the canary no traffic and 100 the baseline none, so such a step could never be judged; promotion moves all traffic), found {bad}"))
            );
        }
    }

    #[test]
    fn templates_only_use_known_variables() {
        let ok = r#"sum(rate(x{pod=~"{{podRegex}}",ns="{{namespace}}"}[{{window}}]))"#;
        assert!(check_template(ok).is_empty());
        assert!(check_template(r#"up{role="{{role}}"}"#).is_empty());
        assert_eq!(
            check_template(r#"x{pod=~"{{pods}}"}"#),
            vec!["unknown variable {{pods}}; known: namespace, service, deployment, role, podRegex, window"]
        );
        assert_eq!(
            check_template(r#"x{pod=~"{{ podRegex }}"}"#),
            vec!["unknown variable {{ podRegex }}; known: namespace, service, deployment, role, podRegex, window"]
        );
        assert_eq!(
            check_template(r#"x{pod=~"{{podRegex"}"#),
            vec!["unclosed {{ in \"{{podRegex\\\"}\"; variables are written {{name}}"]
        );
        assert_eq!(
            check_template("sum(up)"),
            vec!["query uses neither {{podRegex}} nor {{role}}, so canary and baseline would read the same series"]
        );
        assert_eq!(
            check_template("  "),
            vec!["expected a PromQL query, found an empty string"]
        );
    }

    #[test]
    fn window_increase_calls_are_found_outside_strings() {
        let q = r#"sum(window_increase(x{p=~"{{podRegex}}",c="window_increase(y)"})) # window_increase(
            / sum(window_increase ( {__name__="y"} )) + window_increase_total"#;
        let calls = window_increase_calls(q).unwrap();
        let sels: Vec<&str> = calls.iter().map(|c| &q[c.selector.clone()]).collect();
        assert_eq!(
            sels,
            [
                r#"x{p=~"{{podRegex}}",c="window_increase(y)"}"#,
                r#"{__name__="y"}"#
            ]
        );
        assert!(q[calls[1].call.clone()].starts_with("window_increase ("));
        assert!(q[calls[1].call.clone()].ends_with(')'));
        assert_eq!(window_increase_calls("window_increase + 1"), Ok(vec![]));
    }

    #[test]
    fn window_increase_takes_only_a_selector() {
        let msg = |found: &str, hint: &str| {
            format!(
                r#"window_increase(...) takes one counter selector such as http_requests_total{{pod=~"{{{{podRegex}}}}"}}, found {found:?}{hint}"#
            )
        };
        let range = "; it always covers the observation window, so write it without a range such as [{{window}}]";
        let t = r#"sum(window_increase(x{pod=~"{{podRegex}}"}[{{window}}]))"#;
        assert_eq!(
            check_template(t),
            vec![msg(r#"x{pod=~"{{podRegex}}"}[{{window}}]"#, range)]
        );
        for (arg, hint) in [
            ("rate(x[1m])", ""),
            ("", ""),
            ("x offset 1m", ""),
            ("1x", ""),
            ("x{a=\"b\"} y", ""),
        ] {
            let t = format!(r#"window_increase({arg}) + up{{role="{{{{role}}}}"}}"#);
            assert_eq!(check_template(&t), vec![msg(arg, hint)], "{t}");
        }
        assert_eq!(
            check_template(r#"sum(window_increase(x{pod=~"{{podRegex}}"}"#),
            vec![
                r#"window_increase( is never closed in "window_increase(x{pod=~\"{{podRegex}}\"}""#
            ]
        );
        assert!(check_template(r#"sum(window_increase(x{pod=~"{{podRegex}}"}))"#).is_empty());
    }

    #[test]
    fn matchers_parse_like_prometheus() {
        let m = parse_matcher(r#"severity=~"critical|page""#).unwrap();
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("severity", MatchOp::Re, "critical|page")
        );
        let m = parse_matcher(r#" service != 'my\'app' "#).unwrap();
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("service", MatchOp::Ne, "my'app")
        );
        assert_eq!(parse_matcher(r#"a="""#).unwrap().op, MatchOp::Eq);
        assert_eq!(parse_matcher(r#"_a1!~"x""#).unwrap().op, MatchOp::NotRe);
        let hint = |s: &str| {
            format!("expected a matcher like severity=\"critical\" (label name, then = != =~ or !~, then a quoted value), found {s:?}")
        };
        for bad in [
            "team",
            "1a=\"x\"",
            "a==\"x\"",
            "a=x",
            "a=\"x",
            "a=\"x\" b",
            "=\"x\"",
            "a=\"x\\",
        ] {
            assert_eq!(parse_matcher(bad), Err(hint(bad)), "{bad:?}");
        }
        assert_eq!(
            parse_matcher(r#"severity=~"(critical""#),
            Err("invalid regex \"(critical\" in matcher: unclosed group".into())
        );
    }

    #[test]
    fn kubernetes_names() {
        assert!(is_dns_label("myapp-lan"));
        assert!(!is_dns_label("My_App"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("myapp.v2"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_label_key("version"));
        assert!(is_label_key("app.kubernetes.io/version"));
        assert!(!is_label_key("-version"));
        assert!(!is_label_key("a/"));
    }
}
