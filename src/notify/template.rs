//! User templates (HTTP body, email subject): minijinja with strict undefined variables and
//! a fuel limit, compiled once at config load, rendered with a notice's JSON payload.

use minijinja::{Environment, UndefinedBehavior};

use super::Notice;

/// Fuel for one rendering: bounds loops in a template.
pub const DEFAULT_FUEL: u64 = 50_000;

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    env: Environment<'static>,
}

impl Template {
    /// Compiles `source`; the error says what and where (line) is wrong.
    pub fn compile(source: &str, fuel: u64) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(fuel));
        env.add_template_owned("template", source.to_owned())
            .map_err(|e| describe(&e))?;
        Ok(Self { env })
    }

    /// Renders with the notice's payload as context: `version`, `target`, `group_key`,
    /// `count`, `severity`, `title`, `alerts`.
    pub fn render(&self, notice: &Notice) -> Result<String, String> {
        let template = self
            .env
            .get_template("template")
            .map_err(|e| describe(&e))?;
        template
            .render(minijinja::value::Serde(notice.payload()))
            .map_err(|e| describe(&e))
    }
}

/// `template line N: KIND: DETAIL`.
fn describe(err: &minijinja::Error) -> String {
    let what = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    match err.line() {
        Some(line) => format!("template line {line}: {what}"),
        None => what,
    }
}
