//! The pages' brand (`brand_name`, `brand_color`, `brand_logo`) and their templates: the built-in
//! ones, compiled into the binary, each of which a file of the same name in `templates_dir`
//! replaces. Everything is read and compiled at start-up, so a bad colour, an unreadable logo, a
//! misnamed or broken template stops the start with a message naming the setting.

use std::path::Path;

use minijinja::Environment;

/// The built-in templates, by name: the names a `templates_dir` may override.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("sessions.html", include_str!("../templates/sessions.html")),
    ("password.html", include_str!("../templates/password.html")),
    ("admin.html", include_str!("../templates/admin.html")),
    ("setup.html", include_str!("../templates/setup.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("admin_nav.html", include_str!("../templates/admin_nav.html")),
    ("api_keys.html", include_str!("../templates/api_keys.html")),
    ("audit.html", include_str!("../templates/audit.html")),
];

/// The pages' stylesheet, served at `{base_path}/assets/style.css`; `BRAND_COLOR` in it becomes
/// the accent colour.
const STYLESHEET: &str = include_str!("../assets/style.css");

/// The accent colour when none is configured.
pub const DEFAULT_COLOR: &str = "#1b5fad";

/// The product name when none is configured.
pub const DEFAULT_NAME: &str = "Cloakroom";

/// The largest logo served, in bytes.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

/// The most bytes one override template may hold.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// A logo file, served at `{base_path}/brand/logo`.
#[derive(Clone, Debug)]
pub struct Logo {
    /// The file's bytes (shared: serving it copies nothing).
    pub bytes: axum::body::Bytes,
    /// Its media type, from its extension.
    pub content_type: &'static str,
}

/// What the pages show of the operator's brand, and the templates they render with.
#[derive(Clone, Debug)]
pub struct Brand {
    /// The product name in every page's title and header.
    pub name: String,
    /// The accent colour, `#rgb` or `#rrggbb` (checked: it goes into the pages' CSS).
    pub color: Option<String>,
    /// The logo, if one was configured.
    pub logo: Option<Logo>,
    /// The templates: built-in, with `templates_dir`'s files in place of theirs.
    pub templates: Environment<'static>,
    /// The stylesheet with the accent colour in it (shared: serving it copies nothing).
    pub stylesheet: axum::body::Bytes,
}

impl Default for Brand {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            color: None,
            logo: None,
            templates: environment(&[]).unwrap_or_default(),
            stylesheet: STYLESHEET.replace("BRAND_COLOR", DEFAULT_COLOR).into(),
        }
    }
}

/// A setting that was refused: its key and why.
pub type Refusal = (&'static str, String);

impl Brand {
    /// Reads and checks the four settings (each optional).
    pub fn load(
        name: Option<&str>,
        color: Option<&str>,
        logo: Option<&str>,
        templates_dir: Option<&str>,
    ) -> Result<Brand, Refusal> {
        let name = match name.map(str::trim) {
            None => DEFAULT_NAME.to_owned(),
            Some(n)
                if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) =>
            {
                return Err(("brand_name", "expected 1 to 64 characters, none a control".into()));
            }
            Some(n) => n.to_owned(),
        };
        let color = color.map(str::trim).map(parse_color).transpose()?;
        let logo = logo.map(read_logo).transpose()?;
        let overrides = match templates_dir {
            None => Vec::new(),
            Some(dir) => read_overrides(Path::new(dir))?,
        };
        let templates = environment(&overrides)?;
        let stylesheet =
            STYLESHEET.replace("BRAND_COLOR", color.as_deref().unwrap_or(DEFAULT_COLOR));
        Ok(Brand { name, color, logo, templates, stylesheet: stylesheet.into() })
    }
}

fn parse_color(text: &str) -> Result<String, Refusal> {
    let hex = text.strip_prefix('#').unwrap_or("");
    if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("#{}", hex.to_ascii_lowercase()))
    } else {
        Err(("brand_color", format!("expected a colour as #rgb or #rrggbb, not {text:?}")))
    }
}

fn read_logo(path: &str) -> Result<Logo, Refusal> {
    let refuse = |why: String| ("brand_logo", format!("{path}: {why}"));
    let extension = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let content_type = match extension.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        _ => return Err(refuse("expected a .svg, .png, .jpg, .webp or .gif file".into())),
    };
    let bytes = std::fs::read(path).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    if bytes.is_empty() || bytes.len() > MAX_LOGO_BYTES {
        return Err(refuse(format!("expected 1 byte to {} KiB", MAX_LOGO_BYTES / 1024)));
    }
    Ok(Logo { bytes: bytes.into(), content_type })
}

/// The `.html` files of `dir`, each named like a built-in template.
fn read_overrides(dir: &Path) -> Result<Vec<(String, String)>, Refusal> {
    let refuse = |why: String| ("templates_dir", format!("{}: {why}", dir.display()));
    let entries = std::fs::read_dir(dir).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| refuse(format!("cannot read it: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".html") {
            continue;
        }
        if !TEMPLATES.iter().any(|(known, _)| *known == name) {
            let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
            return Err(refuse(format!(
                "{name} is not a template of Cloakroom's (these are: {})",
                known.join(", ")
            )));
        }
        let path = entry.path();
        let too_big = std::fs::metadata(&path).map(|m| m.len() > MAX_TEMPLATE_BYTES);
        if too_big.unwrap_or(false) {
            return Err(refuse(format!("{name} is larger than 256 KiB")));
        }
        let source = std::fs::read_to_string(&path)
            .map_err(|e| refuse(format!("cannot read {name}: {e}")))?;
        found.push((name, source));
    }
    Ok(found)
}

/// The built-in templates with `overrides` in place of theirs, every one compiled (HTML
/// auto-escaping, by the `.html` name).
fn environment(overrides: &[(String, String)]) -> Result<Environment<'static>, Refusal> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        let source = overrides.iter().find(|(n, _)| n == name).map_or(*source, |(_, s)| s);
        env.add_template_owned(*name, source.to_owned())
            .map_err(|e| ("templates_dir", format!("{name}: {e}")))?;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_brand_is_cloakroom_with_the_built_in_templates() {
        let brand = Brand::load(None, None, None, None).unwrap();
        assert_eq!(brand.name, "Cloakroom");
        for (name, _) in TEMPLATES {
            assert!(brand.templates.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn colours_are_hex_only_since_they_go_into_css() {
        assert_eq!(parse_color("#0A7").unwrap(), "#0a7");
        assert_eq!(parse_color("#1b5fad").unwrap(), "#1b5fad");
        for bad in ["red", "#12345", "#1234567", "#12g", "#fff;}body{x:y", "1b5fad", ""] {
            assert_eq!(parse_color(bad).unwrap_err().0, "brand_color", "{bad:?}");
        }
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(Brand::load(Some(" Acme "), None, None, None).unwrap().name, "Acme");
        for bad in ["", "  ", "a\u{1b}[31m", &"x".repeat(65)] {
            assert_eq!(Brand::load(Some(bad), None, None, None).unwrap_err().0, "brand_name");
        }
    }

    #[test]
    fn logos_must_be_images_of_a_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("logo.svg");
        std::fs::write(&svg, "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
        let logo = read_logo(svg.to_str().unwrap()).unwrap();
        assert_eq!(logo.content_type, "image/svg+xml");
        let exe = dir.path().join("logo.exe");
        std::fs::write(&exe, "MZ").unwrap();
        assert_eq!(read_logo(exe.to_str().unwrap()).unwrap_err().0, "brand_logo");
        let huge = dir.path().join("huge.png");
        std::fs::write(&huge, vec![0u8; MAX_LOGO_BYTES + 1]).unwrap();
        assert_eq!(read_logo(huge.to_str().unwrap()).unwrap_err().0, "brand_logo");
        assert_eq!(read_logo("/nonexistent/logo.png").unwrap_err().0, "brand_logo");
    }

    #[test]
    fn a_templates_dir_overrides_by_name_and_refuses_strangers_and_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f);
        std::fs::write(
            at("message.html"),
            "{% extends \"base.html\" %}{% block content %}ours{% endblock %}",
        )
        .unwrap();
        std::fs::write(at("notes.txt"), "ignored: not a template").unwrap();
        let brand = Brand::load(None, None, None, dir.path().to_str()).unwrap();
        let page = brand.templates.get_template("message.html").unwrap().render(()).unwrap();
        assert!(page.contains("ours"), "{page}");

        std::fs::write(at("logn.html"), "a typo").unwrap();
        let (key, why) = Brand::load(None, None, None, dir.path().to_str()).unwrap_err();
        assert_eq!(key, "templates_dir");
        assert!(why.contains("logn.html") && why.contains("login.html"), "{why}");
        std::fs::remove_file(at("logn.html")).unwrap();

        std::fs::write(at("login.html"), "{% if %}").unwrap();
        let (key, why) = Brand::load(None, None, None, dir.path().to_str()).unwrap_err();
        assert_eq!(key, "templates_dir");
        assert!(why.contains("login.html"), "{why}");
    }
}
