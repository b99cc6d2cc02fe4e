//! The dotenv format of `env_file`: `KEY=VALUE`, `export KEY=VALUE`,
//! `#` comments, blank lines, single- or double-quoted values.
//!
//! Pure parsing of text already read. Must never read files or expand
//! variables (`$X` stays literal), so results do not depend on ward's env.

use std::collections::BTreeMap;

/// Parse dotenv text. Errors name the 1-based line inside the env file.
pub(crate) fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .or_else(|| line.strip_prefix("export\t"))
            .map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line_no}: expected `KEY=VALUE`"));
        };
        let key = key.trim();
        if !valid_env_name(key) {
            return Err(format!(
                "line {line_no}: invalid variable name `{key}` (use letters, digits and `_`)"
            ));
        }
        let value = parse_value(value.trim()).map_err(|e| format!("line {line_no}: {e}"))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_value(v: &str) -> Result<String, String> {
    let (value, rest) = if let Some(body) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, other)) => out.push(other),
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        let end = end.ok_or("unterminated double quote")?;
        (out, &body[end..])
    } else if let Some(body) = v.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated single quote")?;
        (body[..end].to_owned(), &body[end + 1..])
    } else {
        // Unquoted: an inline comment starts at whitespace followed by `#`.
        let cut = v
            .char_indices()
            .find(|&(i, c)| c == '#' && v[..i].ends_with([' ', '\t']))
            .map_or(v.len(), |(i, _)| i);
        return Ok(v[..cut].trim_end().to_owned());
    };
    let rest = rest.trim_start();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("unexpected `{rest}` after the quoted value"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dotenv_subset() {
        let text = "\
# a comment

PLAIN=value
export EXPORTED=yes
SPACED = padded value   
INLINE=abc # comment
HASH=a#b
DQ=\"two words # not a comment\"
ESC=\"line\\nnext \\\"q\\\"\"
SQ='$NOT_EXPANDED \\n'
EMPTY=
EQ=a=b
";
        let env = parse_env_file(text).unwrap();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PLAIN"), Some("value"));
        assert_eq!(get("EXPORTED"), Some("yes"));
        assert_eq!(get("SPACED"), Some("padded value"));
        assert_eq!(get("INLINE"), Some("abc"));
        assert_eq!(get("HASH"), Some("a#b"));
        assert_eq!(get("DQ"), Some("two words # not a comment"));
        assert_eq!(get("ESC"), Some("line\nnext \"q\""));
        assert_eq!(get("SQ"), Some("$NOT_EXPANDED \\n"));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(get("EQ"), Some("a=b"));
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn reports_the_line_of_a_bad_entry() {
        assert_eq!(
            parse_env_file("A=1\n\nNOEQUALS\n").unwrap_err(),
            "line 3: expected `KEY=VALUE`"
        );
        assert!(parse_env_file("1BAD=x")
            .unwrap_err()
            .contains("invalid variable name `1BAD`"));
        assert!(parse_env_file("A=\"open")
            .unwrap_err()
            .contains("unterminated double quote"));
        assert!(parse_env_file("A='open")
            .unwrap_err()
            .contains("unterminated single quote"));
        assert!(parse_env_file("A='x' y")
            .unwrap_err()
            .contains("unexpected `y`"));
    }
}
