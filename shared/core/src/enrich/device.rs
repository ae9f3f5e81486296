//! Device class from the user agent.

use serde::{Deserialize, Serialize};

/// Coarse device class derived from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Mobile,
    Tablet,
    Desktop,
    Bot,
    Unknown,
}

impl DeviceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Desktop => "desktop",
            DeviceClass::Bot => "bot",
            DeviceClass::Unknown => "unknown",
        }
    }
}

/// Classifies a user agent. Rules, first match wins (case-insensitive substrings):
/// empty → unknown; `bot`, `crawler`, `spider`, `slurp`, `curl/`, `wget`, `python-requests`,
/// `headless`, `facebookexternalhit`, `preview` → bot; `ipad`, `tablet`, `kindle`, `silk/`,
/// `playbook`, Android without `mobile` → tablet; `mobi`, `iphone`, `ipod`, `android`,
/// `windows phone`, `blackberry`, `opera mini` → mobile; `windows nt`, `macintosh`, `x11`,
/// `linux`, `cros` → desktop; otherwise unknown.
pub fn device_class(user_agent: &str) -> DeviceClass {
    let ua = user_agent.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| ua.contains(n));
    if ua.trim().is_empty() {
        DeviceClass::Unknown
    } else if any(&[
        "bot",
        "crawler",
        "spider",
        "slurp",
        "curl/",
        "wget",
        "python-requests",
        "headless",
        "facebookexternalhit",
        "preview",
    ]) {
        DeviceClass::Bot
    } else if any(&["ipad", "tablet", "kindle", "silk/", "playbook"])
        || (ua.contains("android") && !ua.contains("mobile"))
    {
        DeviceClass::Tablet
    } else if any(&[
        "mobi",
        "iphone",
        "ipod",
        "android",
        "windows phone",
        "blackberry",
        "opera mini",
    ]) {
        DeviceClass::Mobile
    } else if any(&["windows nt", "macintosh", "x11", "linux", "cros"]) {
        DeviceClass::Desktop
    } else {
        DeviceClass::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_classes() {
        for (ua, class) in [
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", DeviceClass::Mobile),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36", DeviceClass::Mobile),
            ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15", DeviceClass::Tablet),
            ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", DeviceClass::Tablet),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", DeviceClass::Desktop),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15", DeviceClass::Desktop),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", DeviceClass::Desktop),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", DeviceClass::Bot),
            ("curl/8.4.0", DeviceClass::Bot),
            ("", DeviceClass::Unknown),
            ("SomethingElse/1.0", DeviceClass::Unknown),
        ] {
            assert_eq!(device_class(ua), class, "{ua}");
        }
    }

    proptest::proptest! {
        /// Any text at all gets a class, never a panic.
        #[test]
        fn any_text_has_a_class(agent in "\\PC{0,80}") {
            let _ = device_class(&agent);
        }
    }
}
