//! Prompts behind a trait: dialoguer on a terminal, a script in tests.
//!
//! The interview in [`crate::interview`] only talks to [`Prompter`], so the
//! scripted prompter drives exactly the code a person at a terminal does, and
//! this is the only module that uses dialoguer.

use std::collections::VecDeque;

use dialoguer::theme::ColorfulTheme;

/// A prompt could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The terminal failed or was closed (Ctrl-D, Esc).
    #[error("the prompt was interrupted: {0}")]
    Terminal(String),
    /// A scripted prompter ran out of answers or got the wrong kind.
    #[error("scripted prompt {prompt:?}: {problem}")]
    Script {
        /// The prompt being answered.
        prompt: String,
        /// What went wrong.
        problem: String,
    },
}

/// One item of a selection: an id to answer with and a label to show.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The value the caller gets back.
    pub id: String,
    /// What the user sees.
    pub label: String,
}

/// A validator for text input: `Err` holds the message shown to the user.
pub type Validate<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// Asks questions. Every method blocks until it has an answer.
pub trait Prompter {
    /// Free text, re-asked until `validate` accepts it.
    fn input(
        &mut self,
        prompt: &str,
        default: &str,
        validate: Validate<'_>,
    ) -> Result<String, PromptError>;
    /// One of `choices`; returns its id.
    fn select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        default: usize,
    ) -> Result<String, PromptError>;
    /// Any subset of `choices`; returns their ids in choice order.
    fn multi_select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        checked: &[bool],
    ) -> Result<Vec<String>, PromptError>;
    /// Yes or no.
    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError>;
    /// Shows text that needs no answer (a summary, an error to fix).
    fn note(&mut self, text: &str);
}

/// Prompts on the terminal (stderr) with dialoguer.
#[derive(Default)]
pub struct TerminalPrompter {
    theme: ColorfulTheme,
}

impl std::fmt::Debug for TerminalPrompter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalPrompter").finish_non_exhaustive()
    }
}

fn terminal(e: dialoguer::Error) -> PromptError {
    PromptError::Terminal(e.to_string())
}

impl Prompter for TerminalPrompter {
    fn input(
        &mut self,
        prompt: &str,
        default: &str,
        validate: Validate<'_>,
    ) -> Result<String, PromptError> {
        dialoguer::Input::<String>::with_theme(&self.theme)
            .with_prompt(prompt)
            .default(default.to_string())
            .validate_with(|s: &String| validate(s))
            .interact_text()
            .map_err(terminal)
    }

    fn select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        default: usize,
    ) -> Result<String, PromptError> {
        let labels: Vec<&str> = choices.iter().map(|c| c.label.as_str()).collect();
        let i = dialoguer::Select::with_theme(&self.theme)
            .with_prompt(prompt)
            .items(&labels)
            .default(default)
            .interact()
            .map_err(terminal)?;
        Ok(choices[i].id.clone())
    }

    fn multi_select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        checked: &[bool],
    ) -> Result<Vec<String>, PromptError> {
        let labels: Vec<&str> = choices.iter().map(|c| c.label.as_str()).collect();
        let picked = dialoguer::MultiSelect::with_theme(&self.theme)
            .with_prompt(format!("{prompt} (space to toggle, enter to accept)"))
            .items(&labels)
            .defaults(checked)
            .interact()
            .map_err(terminal)?;
        Ok(picked.into_iter().map(|i| choices[i].id.clone()).collect())
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError> {
        dialoguer::Confirm::with_theme(&self.theme)
            .with_prompt(prompt)
            .default(default)
            .interact()
            .map_err(terminal)
    }

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// Accept the default, whatever the prompt.
    Default,
    /// Type this text (for `input`), or pick the choice with this id (`select`).
    Text(String),
    /// Pick exactly these ids (for `multi_select`).
    Pick(Vec<String>),
    /// Answer a confirmation.
    Confirm(bool),
}

/// Answers prompts from a script and records what was asked: the test double
/// of [`TerminalPrompter`]. An answer `validate` rejects is recorded and the
/// next scripted answer is used, as a person would type again.
#[derive(Debug, Default)]
pub struct ScriptedPrompter {
    script: VecDeque<Scripted>,
    /// Every prompt asked and every note shown, in order.
    pub transcript: Vec<String>,
}

impl ScriptedPrompter {
    /// A prompter that answers with `script`, in order.
    pub fn new(script: impl IntoIterator<Item = Scripted>) -> Self {
        Self {
            script: script.into_iter().collect(),
            transcript: Vec::new(),
        }
    }

    /// Whether every scripted answer was used.
    pub fn is_exhausted(&self) -> bool {
        self.script.is_empty()
    }

    fn next(&mut self, prompt: &str) -> Result<Scripted, PromptError> {
        self.transcript.push(format!("? {prompt}"));
        self.script.pop_front().ok_or_else(|| PromptError::Script {
            prompt: prompt.to_string(),
            problem: "no scripted answer left".into(),
        })
    }

    fn wrong(prompt: &str, got: &Scripted) -> PromptError {
        PromptError::Script {
            prompt: prompt.to_string(),
            problem: format!("unexpected answer {got:?}"),
        }
    }
}

impl Prompter for ScriptedPrompter {
    fn input(
        &mut self,
        prompt: &str,
        default: &str,
        validate: Validate<'_>,
    ) -> Result<String, PromptError> {
        loop {
            let text = match self.next(prompt)? {
                Scripted::Default => default.to_string(),
                Scripted::Text(t) => t,
                other => return Err(Self::wrong(prompt, &other)),
            };
            match validate(&text) {
                Ok(()) => return Ok(text),
                Err(msg) => self.transcript.push(format!("! {msg}")),
            }
        }
    }

    fn select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        default: usize,
    ) -> Result<String, PromptError> {
        match self.next(prompt)? {
            Scripted::Default => Ok(choices[default].id.clone()),
            Scripted::Text(id) if choices.iter().any(|c| c.id == id) => Ok(id),
            other => Err(Self::wrong(prompt, &other)),
        }
    }

    fn multi_select(
        &mut self,
        prompt: &str,
        choices: &[Choice],
        checked: &[bool],
    ) -> Result<Vec<String>, PromptError> {
        match self.next(prompt)? {
            Scripted::Default => Ok(choices
                .iter()
                .zip(checked)
                .filter(|(_, on)| **on)
                .map(|(c, _)| c.id.clone())
                .collect()),
            Scripted::Pick(ids) if ids.iter().all(|id| choices.iter().any(|c| &c.id == id)) => {
                Ok(choices
                    .iter()
                    .filter(|c| ids.contains(&c.id))
                    .map(|c| c.id.clone())
                    .collect())
            }
            other => Err(Self::wrong(prompt, &other)),
        }
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError> {
        match self.next(prompt)? {
            Scripted::Default => Ok(default),
            Scripted::Confirm(yes) => Ok(yes),
            other => Err(Self::wrong(prompt, &other)),
        }
    }

    fn note(&mut self, text: &str) {
        self.transcript.push(text.to_string());
    }
}
