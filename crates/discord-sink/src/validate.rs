//! Discord's webhook message limits (Discord developer docs, "Execute Webhook" and
//! "Embed Limits"): content 2000, username 80, 10 embeds, title 256, description 4096,
//! 25 fields of name 256 / value 1024, footer 2048, author 256, 6000 characters in all.

use serde_json::Value;

fn chars(v: &Value, key: &str) -> usize {
    v.get(key)
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count())
}

fn check(errors: &mut Vec<String>, what: &str, len: usize, max: usize) {
    if len > max {
        errors.push(format!("{what} is {len} characters, Discord allows {max}"));
    }
}

/// Every way `payload` breaks Discord's rules; empty when Discord would accept it.
pub fn validate(payload: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(obj) = payload.as_object() else {
        return vec!["payload is not a JSON object".into()];
    };
    check(&mut errors, "content", chars(payload, "content"), 2000);
    check(&mut errors, "username", chars(payload, "username"), 80);
    let embeds = obj
        .get("embeds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    check(&mut errors, "embeds count", embeds.len(), 10);
    if chars(payload, "content") == 0 && embeds.is_empty() {
        errors.push(
            "message has neither content nor embeds (Discord: 50006 Cannot send an empty message)"
                .into(),
        );
    }
    let total: usize = embeds
        .iter()
        .enumerate()
        .map(|(i, e)| embed(&mut errors, i, e))
        .sum();
    check(&mut errors, "embeds in total", total, 6000);
    errors
}

fn embed(errors: &mut Vec<String>, i: usize, e: &Value) -> usize {
    let title = chars(e, "title");
    let description = chars(e, "description");
    check(errors, &format!("embeds[{i}].title"), title, 256);
    check(
        errors,
        &format!("embeds[{i}].description"),
        description,
        4096,
    );
    let footer = e.get("footer").map_or(0, |f| chars(f, "text"));
    let author = e.get("author").map_or(0, |a| chars(a, "name"));
    check(errors, &format!("embeds[{i}].footer.text"), footer, 2048);
    check(errors, &format!("embeds[{i}].author.name"), author, 256);
    let fields = e
        .get("fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    check(
        errors,
        &format!("embeds[{i}].fields count"),
        fields.len(),
        25,
    );
    let mut field_chars = 0;
    for (j, f) in fields.iter().enumerate() {
        check(
            errors,
            &format!("embeds[{i}].fields[{j}].name"),
            chars(f, "name"),
            256,
        );
        check(
            errors,
            &format!("embeds[{i}].fields[{j}].value"),
            chars(f, "value"),
            1024,
        );
        field_chars += chars(f, "name") + chars(f, "value");
    }
    title + description + footer + author + field_chars
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_a_normal_alert_embed() {
        let ok = json!({"embeds":[{"title":"[FIRING:1] ServiceDown","description":"collector is down","color":15158332}]});
        assert!(validate(&ok).is_empty());
    }

    #[test]
    fn rejects_oversized_fields_and_empty_messages() {
        let long_title = "x".repeat(257);
        let errors = validate(&json!({"embeds":[{"title": long_title, "description": "d"}]}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("embeds[0].title is 257"));
        let long_description = "y".repeat(4097);
        assert!(
            !validate(&json!({"embeds":[{"title":"t","description": long_description}]}))
                .is_empty()
        );
        assert!(!validate(&json!({"content": ""})).is_empty());
        assert!(!validate(&json!([1, 2])).is_empty());
        assert!(!validate(&json!({"content": "z".repeat(2001)})).is_empty());
    }

    #[test]
    fn counts_characters_not_bytes() {
        let title: String = "é".repeat(256); // 512 bytes, 256 characters
        assert!(validate(&json!({"embeds":[{"title": title}]})).is_empty());
    }
}
