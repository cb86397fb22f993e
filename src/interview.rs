//! The interactive interview: asks for whatever flags and the answers file
//! left open, then shows a summary to confirm.
//!
//! It only fills in an [`AnswersFile`]; checking stays in
//! [`Answers::resolve`], so a prompted answer is held to exactly the rules a
//! flag or an answers file is. Each text prompt validates as the user types,
//! and a pipeline the catalog rejects (a scheduler with no mailing list) sends
//! the user back to the service selection with the reason.

use crate::answers::{
    AnswerError, Answers, AnswersFile, ClientName, Datacenter, EnvName, Region, Schedule,
    StepEntry, StepName,
};
use crate::catalog::Catalog;
use crate::prompt::{Choice, PromptError, Prompter};

/// How often a rejected pipeline sends the user back before giving up.
const MAX_ATTEMPTS: usize = 5;

/// Why the interview ended without answers.
#[derive(Debug, thiserror::Error)]
pub enum InterviewError {
    /// A prompt failed.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The user declined the summary.
    #[error("cancelled at the summary; nothing was written")]
    Cancelled,
    /// The answers were still invalid after several attempts.
    #[error("{0}")]
    Invalid(#[from] AnswerError),
}

/// A prompt validator from a checked type's `TryFrom<&str>`.
fn check<T>() -> impl Fn(&str) -> Result<(), String>
where
    T: for<'a> TryFrom<&'a str, Error = AnswerError>,
{
    |s: &str| T::try_from(s).map(drop).map_err(|e| e.to_string())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Fills every open field of `raw` by asking, then confirms the summary.
pub fn interview(
    mut raw: AnswersFile,
    prompter: &mut dyn Prompter,
    catalog: &Catalog,
) -> Result<Answers, InterviewError> {
    let defaults = &catalog.defaults;
    if raw.client.is_none() {
        let v = check::<ClientName>();
        raw.client = Some(prompter.input("Client name", "", &v)?);
    }
    if raw.source.is_none() {
        let choices: Vec<Choice> = catalog
            .sources
            .iter()
            .map(|s| Choice {
                id: s.id.clone(),
                label: format!("{:<5} {}", s.id, s.description),
            })
            .collect();
        let default = catalog
            .sources
            .iter()
            .position(|s| s.id == defaults.source)
            .unwrap_or(0);
        raw.source =
            Some(prompter.select("Where does the client's data come from?", &choices, default)?);
    }
    let ask_steps = raw.steps.is_none();
    if raw.region.is_none() {
        let v = check::<Region>();
        raw.region = Some(prompter.input("AWS region", &defaults.region, &v)?);
    }
    if raw.datacenter.is_none() {
        let v = check::<Datacenter>();
        raw.datacenter =
            Some(prompter.input("Qualtrics datacenter id", &defaults.datacenter, &v)?);
    }
    if raw.environments.is_none() {
        let v = |s: &str| {
            let envs = split_list(s);
            if envs.is_empty() {
                return Err("give at least one environment".to_string());
            }
            envs.iter().try_for_each(|e| {
                EnvName::try_from(e.as_str())
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        };
        let text = prompter.input(
            "Environments (comma-separated)",
            &defaults.environments.join(","),
            &v,
        )?;
        raw.environments = Some(split_list(&text));
    }
    // Only a scheduled source (sftp) runs on a schedule; the others run when
    // input arrives, so there is nothing to ask.
    let scheduled = raw
        .source
        .as_deref()
        .and_then(|id| catalog.source(id))
        .filter(|s| s.scheduled);
    if let (None, Some(source)) = (&raw.schedule, scheduled) {
        let v = check::<Schedule>();
        let default = source.default_schedule.as_deref().unwrap_or_default();
        let prompt = format!(
            "How often does the {} source poll? (EventBridge cron/rate, UTC)",
            source.id
        );
        raw.schedule = Some(prompter.input(&prompt, default, &v)?);
    }

    let mut attempt = 0;
    let answers = loop {
        attempt += 1;
        if ask_steps {
            raw.steps = Some(ask_services(prompter, catalog)?);
        }
        match Answers::resolve(&raw, catalog) {
            Ok(a) => break a,
            // Back to the services only if they are what is wrong: the other
            // answers resolve with the default services.
            Err(e)
                if ask_steps
                    && attempt < MAX_ATTEMPTS
                    && resolves_with_default_steps(&raw, catalog) =>
            {
                prompter.note(&format!("That pipeline does not work: {e}"));
            }
            Err(e) => return Err(e.into()),
        }
    };
    prompter.note(&crate::cmd::summary(&answers, catalog));
    if !prompter.confirm("Generate this repository?", true)? {
        return Err(InterviewError::Cancelled);
    }
    Ok(answers)
}

fn resolves_with_default_steps(raw: &AnswersFile, catalog: &Catalog) -> bool {
    let defaults = AnswersFile {
        steps: None,
        ..raw.clone()
    };
    Answers::resolve(&defaults, catalog).is_ok()
}

/// Multi-select of services, then names for each repeatable kind chosen.
fn ask_services(
    prompter: &mut dyn Prompter,
    catalog: &Catalog,
) -> Result<Vec<StepEntry>, PromptError> {
    let kinds: Vec<_> = catalog.selectable_kinds().collect();
    let choices: Vec<Choice> = kinds
        .iter()
        .map(|k| Choice {
            id: k.id.clone(),
            label: format!("{:<23} {}", k.id, k.description),
        })
        .collect();
    let checked: Vec<bool> = kinds
        .iter()
        .map(|k| catalog.defaults.services.contains(&k.id))
        .collect();
    let picked =
        prompter.multi_select("Which services does the client need?", &choices, &checked)?;
    let mut steps = Vec::new();
    for id in picked {
        let kind = catalog.kind(&id).expect("choices come from the catalog");
        let names = if kind.repeatable {
            let v = |s: &str| {
                let names = split_list(s);
                if names.is_empty() {
                    return Err("give at least one name".to_string());
                }
                names.iter().try_for_each(|n| {
                    StepName::try_from(n.as_str())
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            };
            let prompt = format!("Step names for {id} (comma-separated, one step each)");
            split_list(&prompter.input(&prompt, &id, &v)?)
        } else {
            vec![id.clone()]
        };
        for name in names {
            steps.push(StepEntry {
                name: Some(name),
                kind: id.clone(),
                settings: toml::Table::new(),
            });
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{Scripted, ScriptedPrompter};

    fn text(s: &str) -> Scripted {
        Scripted::Text(s.into())
    }

    #[test]
    fn defaults_everywhere_give_the_default_pipeline() {
        let mut p = ScriptedPrompter::new([
            text("client-x"),
            Scripted::Default, // source
            Scripted::Default, // region
            Scripted::Default, // datacenter
            Scripted::Default, // environments
            Scripted::Default, // services
            Scripted::Default, // names for distribution-scheduler
            Scripted::Confirm(true),
        ]);
        let a = interview(AnswersFile::default(), &mut p, Catalog::builtin()).unwrap();
        assert!(p.is_exhausted());
        let names: Vec<_> = a.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["validator", "contact-importer", "distribution-scheduler"]
        );
        assert_eq!(a.source, "s3");
        assert!(
            p.transcript
                .iter()
                .any(|l| l.contains("Generate this repository?"))
        );
    }

    #[test]
    fn bad_text_is_asked_again_and_a_broken_pipeline_goes_back_to_services() {
        let mut p = ScriptedPrompter::new([
            text("../evil"),
            text("acme"),
            text("sftp"),
            text("mars-1"),
            text("eu-west-1"),
            text("fra1"),
            text("dev,staging,prod"),
            text("cron(0 6 * * *)"),
            text("cron(0 6 * * ? *)"),
            Scripted::Pick(vec!["validator".into(), "distribution-scheduler".into()]),
            text("invite"),
            Scripted::Pick(vec![
                "validator".into(),
                "contact-importer".into(),
                "distribution-scheduler".into(),
            ]),
            text("invite, reminder"),
            Scripted::Confirm(true),
        ]);
        let a = interview(AnswersFile::default(), &mut p, Catalog::builtin()).unwrap();
        assert!(p.is_exhausted());
        let t = p.transcript.join("\n");
        assert!(t.contains("! invalid client \"../evil\""), "{t}");
        assert!(t.contains("! invalid region \"mars-1\""), "{t}");
        assert!(t.contains("6 fields"), "{t}");
        assert!(
            t.contains("That pipeline does not work: step \"invite\""),
            "{t}"
        );
        let names: Vec<_> = a.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sftp-poller",
                "validator",
                "contact-importer",
                "invite",
                "reminder"
            ]
        );
        assert_eq!(a.schedule.unwrap().as_str(), "cron(0 6 * * ? *)");
        let envs: Vec<_> = a.environments.iter().map(|e| e.as_str()).collect();
        assert_eq!(envs, ["dev", "staging", "prod"]);
    }

    #[test]
    fn given_answers_are_not_asked_and_declining_cancels() {
        let raw = AnswersFile {
            client: Some("acme".into()),
            source: Some("http".into()),
            region: Some("eu-west-1".into()),
            datacenter: Some("fra1".into()),
            environments: Some(vec!["dev".into()]),
            schedule: Some(String::new()),
            steps: Some(vec![StepEntry {
                name: None,
                kind: "validator".into(),
                settings: toml::Table::new(),
            }]),
            ..AnswersFile::default()
        };
        let mut p = ScriptedPrompter::new([Scripted::Confirm(false)]);
        let err = interview(raw, &mut p, Catalog::builtin()).unwrap_err();
        assert!(matches!(err, InterviewError::Cancelled), "{err}");
        assert_eq!(
            p.transcript.iter().filter(|l| l.starts_with("? ")).count(),
            1
        );
    }

    #[test]
    fn an_error_the_services_cannot_fix_is_not_asked_again() {
        let raw = AnswersFile {
            client: Some("c".repeat(55)),
            source: Some("s3".into()),
            region: Some("eu-west-1".into()),
            datacenter: Some("fra1".into()),
            environments: Some(vec!["dev".into()]),
            ..AnswersFile::default()
        };
        let mut p = ScriptedPrompter::new([Scripted::Default, Scripted::Default]);
        let err = interview(raw, &mut p, Catalog::builtin()).unwrap_err();
        assert!(err.to_string().contains("data bucket name"), "{err}");
        let asked = p
            .transcript
            .iter()
            .filter(|l| l.starts_with("? Which services"))
            .count();
        assert_eq!(asked, 1, "{:?}", p.transcript);
    }
}
