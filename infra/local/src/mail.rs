//! Reads the email the emulator "sent", whichever emulator it is, and writes it to a folder
//! as `.html` files with an `index.html`. The emulator asked is the one SESv2 calls go to
//! ([`ses_endpoint`]), which may not be the one serving the other services.
//!
//! - moto: `GET /moto-api/data.json` -> `ses.Message[]` (simple) and `ses.RawMessage[]`
//! - LocalStack: `GET /_aws/ses` -> `messages[]`
//! - fakecloud: `GET /_fakecloud/ses/emails` -> `emails[]`

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::LocalError;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SentEmail {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// Plain-HTTP GET returning the status and the body.
pub async fn http_get(url: &str) -> Result<(u16, Bytes), LocalError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| LocalError::pipeline("mail read", format!("bad URL {url}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(LocalError::pipeline(
            "mail read",
            format!("only http:// emulator endpoints are supported, got {url}"),
        ));
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(uri)
        .await
        .map_err(|e| LocalError::pipeline("mail read", format!("GET {url}: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| LocalError::pipeline("mail read", format!("GET {url}: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// The emulator the functions send email through: the SDK's endpoint for SESv2
/// (`AWS_ENDPOINT_URL_SESV2`, else `AWS_ENDPOINT_URL`), `None` on AWS.
pub fn ses_endpoint() -> Option<String> {
    ember_aws::config::endpoint_of("SESV2")
}

/// Every email the emulator at `endpoint` has sent (all senders; filter with [`from_sender`]).
pub async fn sent_emails(endpoint: &str) -> Result<Vec<SentEmail>, LocalError> {
    let base = endpoint.trim_end_matches('/');
    // moto builds data.json from live models and answers 500 when one changes while it is
    // being serialised (other work going on): such an answer is asked again.
    let mut tried = Vec::new();
    for attempt in 0..5 {
        if attempt > 0 {
            if !tried.iter().any(|t: &String| t.contains("HTTP 5")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            tried.clear();
        }
        if let Some(emails) = probe(base, &mut tried).await {
            return Ok(emails);
        }
    }
    Err(LocalError::pipeline(
        "mail read",
        format!(
            "no emulator mail API answered at {base} ({})",
            tried.join("; ")
        ),
    ))
}

/// Asks each emulator's mail API in turn; what each said goes to `tried`.
async fn probe(base: &str, tried: &mut Vec<String>) -> Option<Vec<SentEmail>> {
    for (path, parse) in [
        (
            "/moto-api/data.json",
            parse_moto as fn(&Value) -> Option<Vec<SentEmail>>,
        ),
        ("/_aws/ses", parse_localstack),
        ("/_fakecloud/ses/emails", parse_fakecloud),
    ] {
        let url = format!("{base}{path}");
        match http_get(&url).await {
            Ok((200, body)) => {
                if let Some(emails) = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .as_ref()
                    .and_then(parse)
                {
                    return Some(emails);
                }
                tried.push(format!("{path}: unexpected shape"));
            }
            Ok((status, _)) => tried.push(format!("{path}: HTTP {status}")),
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    None
}

/// The emails sent from `address` (matched inside `Name <address>` too).
pub fn from_sender(emails: Vec<SentEmail>, address: &str) -> Vec<SentEmail> {
    emails
        .into_iter()
        .filter(|e| e.from.contains(address))
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn parse_moto(d: &Value) -> Option<Vec<SentEmail>> {
    let ses = d.get("ses")?;
    let mut out = Vec::new();
    for m in ses
        .get("Message")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(SentEmail {
            id: s(m, "id"),
            from: s(m, "source"),
            to: strings(m.pointer("/destinations/ToAddresses")),
            subject: s(m, "subject"),
            html: m.get("body").and_then(Value::as_str).map(str::to_owned),
            text: None,
        });
    }
    for m in ses
        .get("RawMessage")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let raw = s(m, "raw_data");
        let (subject, html, text) = parse_mime(&raw);
        let mut to = strings(m.get("destinations"));
        if to.is_empty() {
            to = strings(m.pointer("/destinations/ToAddresses"));
        }
        out.push(SentEmail {
            id: s(m, "id"),
            from: s(m, "source"),
            to,
            subject,
            html,
            text,
        });
    }
    Some(out)
}

fn parse_localstack(d: &Value) -> Option<Vec<SentEmail>> {
    let msgs = d.get("messages")?.as_array()?;
    Some(
        msgs.iter()
            .map(|m| {
                let mut e = SentEmail {
                    id: s(m, "Id"),
                    from: s(m, "Source"),
                    to: strings(m.pointer("/Destination/ToAddresses")),
                    subject: s(m, "Subject"),
                    html: m
                        .pointer("/Body/html_part")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    text: m
                        .pointer("/Body/text_part")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                };
                if let Some(raw) = m.get("RawData").and_then(Value::as_str) {
                    let (subject, html, text) = parse_mime(raw);
                    e.subject = if e.subject.is_empty() {
                        subject
                    } else {
                        e.subject
                    };
                    e.html = e.html.or(html);
                    e.text = e.text.or(text);
                }
                e
            })
            .collect(),
    )
}

fn parse_fakecloud(d: &Value) -> Option<Vec<SentEmail>> {
    let msgs = d.get("emails")?.as_array()?;
    Some(
        msgs.iter()
            .map(|m| SentEmail {
                id: s(m, "messageId"),
                from: s(m, "from"),
                to: strings(m.get("to")),
                subject: s(m, "subject"),
                html: m.get("htmlBody").and_then(Value::as_str).map(str::to_owned),
                text: m.get("textBody").and_then(Value::as_str).map(str::to_owned),
            })
            .collect(),
    )
}

/// Subject, HTML part and text part of a raw MIME message (7bit/8bit, quoted-printable and
/// base64 parts; enough for the messages Ember sends).
pub fn parse_mime(raw: &str) -> (String, Option<String>, Option<String>) {
    let raw = raw.replace("\r\n", "\n");
    let (head, _) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let subject = header_value(head, "subject").unwrap_or_default();
    let mut html = None;
    let mut text = None;
    walk_parts(&raw, &mut html, &mut text);
    (subject, html, text)
}

fn header_value(head: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in head.lines() {
        if let Some(v) = value.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_owned());
            }
        }
    }
    value
}

fn walk_parts(part: &str, html: &mut Option<String>, text: &mut Option<String>) {
    let (head, body) = part.split_once("\n\n").unwrap_or((part, ""));
    let ctype = header_value(head, "content-type").unwrap_or_else(|| "text/plain".into());
    let lower = ctype.to_ascii_lowercase();
    if lower.starts_with("multipart/") {
        let Some(boundary) = ctype
            .split(';')
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("boundary=")
                    .or_else(|| p.trim().strip_prefix("BOUNDARY="))
            })
            .next()
            .map(|b| b.trim_matches('"').to_owned())
        else {
            return;
        };
        let delim = format!("--{boundary}");
        for chunk in body.split(&delim).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            walk_parts(chunk.trim_start_matches('\n'), html, text);
        }
        return;
    }
    let encoding = header_value(head, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "base64" => {
            use base64::Engine;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        }
        "quoted-printable" => decode_qp(body),
        _ => body.to_owned(),
    };
    if lower.starts_with("text/html") && html.is_none() {
        *html = Some(decoded);
    } else if lower.starts_with("text/plain") && text.is_none() {
        *text = Some(decoded);
    }
}

fn decode_qp(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if i + 1 < bytes.len() && bytes[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            // Bytes, not `&s[..]`: a `=` before a multi-byte character must not split it.
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes every email as `NNNN-<recipient>.html` plus an `index.html` linking them.
/// Returns the index path.
pub fn write_emails(dir: &Path, emails: &[SentEmail]) -> Result<PathBuf, LocalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
    let mut rows = String::new();
    for (i, e) in emails.iter().enumerate() {
        let to = e.to.join(", ");
        let slug: String = to
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(48)
            .collect();
        let file = format!("{:04}-{slug}.html", i + 1);
        let body = match (&e.html, &e.text) {
            (Some(h), _) => h.clone(),
            (None, Some(t)) => format!("<pre>{}</pre>", escape(t)),
            (None, None) => "<p>(no body)</p>".to_owned(),
        };
        let page = format!(
            "<!doctype html>\n<!-- From: {} | To: {} | Subject: {} | Message-Id: {} -->\n{body}\n",
            escape(&e.from),
            escape(&to),
            escape(&e.subject),
            escape(&e.id)
        );
        std::fs::write(dir.join(&file), page)
            .map_err(|err| LocalError::io(format!("writing {file}"), err))?;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><a href=\"{file}\">{}</a></td></tr>\n",
            i + 1,
            escape(&to),
            escape(&e.subject)
        ));
    }
    let index = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Ember: {} emails sent</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}\
         tr:nth-child(even){{background:#f4f4f4}}</style></head>\n<body><h1>{} emails sent</h1>\n\
         <p><a href=\"../report/index.html\">campaign reports</a> (what each campaign earned)</p>\n\
         <table><tr><th>#</th><th>To</th><th>Subject</th></tr>\n{rows}</table></body></html>\n",
        emails.len(),
        emails.len()
    );
    let path = dir.join("index.html");
    std::fs::write(&path, index).map_err(|e| LocalError::io("writing index.html", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_decodes_to_the_end_and_never_splits_a_character() {
        assert_eq!(decode_qp("caf=C3=A9"), "café");
        assert_eq!(decode_qp("a=\nb"), "ab");
        assert_eq!(decode_qp("=é and ="), "=é and =");
    }

    #[test]
    fn moto_localstack_and_fakecloud_shapes_parse() {
        let moto = serde_json::json!({"ses": {"Message": [{"id": "1", "source": "Ember <a@x>", "destinations": {"ToAddresses": ["b@y"]}, "subject": "S", "body": "<p>hi</p>"}], "RawMessage": []}});
        let m = parse_moto(&moto).unwrap();
        assert_eq!(m[0].to, vec!["b@y"]);
        assert_eq!(m[0].html.as_deref(), Some("<p>hi</p>"));
        let ls = serde_json::json!({"messages": [{"Id": "2", "Source": "a@x", "Destination": {"ToAddresses": ["c@y"]}, "Subject": "T", "Body": {"html_part": "<b>x</b>", "text_part": "x"}}]});
        assert_eq!(parse_localstack(&ls).unwrap()[0].subject, "T");
        let fc = serde_json::json!({"emails": [{"messageId": "3", "from": "a@x", "to": ["d@y"], "subject": "U", "htmlBody": "<i>z</i>"}]});
        assert_eq!(parse_fakecloud(&fc).unwrap()[0].to, vec!["d@y"]);
        assert_eq!(from_sender(m, "a@x").len(), 1);
    }

    #[test]
    fn raw_mime_parts_are_decoded() {
        let raw = "Subject: Your cart\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>caf=C3=A9</p>\r\n--b1--\r\n";
        let (subject, html, text) = parse_mime(raw);
        assert_eq!(subject, "Your cart");
        assert_eq!(html.unwrap().trim(), "<p>café</p>");
        assert_eq!(text.unwrap().trim(), "hello");
    }

    #[test]
    fn emails_are_written_with_an_index() {
        let dir = std::env::temp_dir().join(format!("ember-mail-{}", uuid::Uuid::new_v4()));
        let e = SentEmail {
            id: "1".into(),
            from: "a@x".into(),
            to: vec!["b@y".into()],
            subject: "S <1>".into(),
            html: Some("<p>x</p>".into()),
            text: None,
        };
        let index = write_emails(&dir, &[e]).unwrap();
        let text = std::fs::read_to_string(index).unwrap();
        assert!(text.contains("S &lt;1&gt;") && text.contains("0001-b-y.html"));
        assert!(dir.join("0001-b-y.html").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
