//! The question template: how a question (and, for the in-prompt baselines, a context
//! passage) becomes the prompt θ answers. Every method uses the same template so that
//! differences come from memory alone (DESIGN §1.9).
//!
//! - `plain`: `Question: {q}\nAnswer:` (with a context: `Context: {c}\n\n` before it);
//! - `chat`: the model's own chat template (GGUF `tokenizer.chat_template` or HF
//!   `tokenizer_config.json`), rendered with minijinja for one user message holding the
//!   plain text above without the trailing `Answer:`, and the generation prompt.
use crate::error::{Error, Result};
use std::path::Path;

/// A question template, ready to render.
#[derive(Clone, Debug)]
pub enum Template {
    /// `Question: … Answer:`.
    Plain,
    /// The model's own chat template (Jinja source).
    Chat {
        /// The Jinja source.
        source: String,
    },
}

impl Template {
    /// The template's name as recorded in checkpoints (`plain` or `chat`).
    pub fn name(&self) -> &'static str {
        match self {
            Template::Plain => "plain",
            Template::Chat { .. } => "chat",
        }
    }

    /// The template called `name` for the model at `model_path`; `chat` needs the model's
    /// chat template and is an error naming the file when it has none.
    pub fn for_model(name: &str, model_path: &Path) -> Result<Template> {
        match name {
            "plain" => Ok(Template::Plain),
            "chat" => match chat_template_of(model_path)? {
                Some(source) => Ok(Template::Chat { source }),
                None => Err(Error::Invalid(format!(
                    "{}: the model has no chat template; use the plain template",
                    model_path.display()
                ))),
            },
            other => Err(Error::Invalid(format!(
                "unknown question template \"{other}\" (plain or chat)"
            ))),
        }
    }

    /// The prompt text for `question`, optionally with a context passage before it.
    pub fn render(&self, question: &str, context: Option<&str>) -> Result<String> {
        let mut body = String::new();
        if let Some(c) = context {
            body.push_str("Context: ");
            body.push_str(c.trim());
            body.push_str("\n\n");
        }
        body.push_str("Question: ");
        body.push_str(question.trim());
        match self {
            Template::Plain => {
                body.push_str("\nAnswer:");
                Ok(body)
            }
            Template::Chat { source } => {
                let mut env = minijinja::Environment::new();
                env.add_template("chat", source)
                    .map_err(|e| Error::Invalid(format!("the model's chat template: {e}")))?;
                let tmpl = env
                    .get_template("chat")
                    .map_err(|e| Error::Invalid(format!("the model's chat template: {e}")))?;
                let messages = vec![minijinja::context! { role => "user", content => body }];
                tmpl.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => "",
                    eos_token => "",
                })
                .map_err(|e| Error::Invalid(format!("rendering the model's chat template: {e}")))
            }
        }
    }
}

/// The chat template stored with a model: GGUF metadata `tokenizer.chat_template`, or
/// `chat_template` in an HF directory's `tokenizer_config.json`.
pub fn chat_template_of(model_path: &Path) -> Result<Option<String>> {
    if model_path.is_dir() {
        let p = model_path.join("tokenizer_config.json");
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
        return Ok(v
            .get("chat_template")
            .and_then(|t| t.as_str())
            .map(str::to_string));
    }
    let g = cmt_runtime::gguf::GgufFile::open(model_path)?;
    Ok(g.get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}
