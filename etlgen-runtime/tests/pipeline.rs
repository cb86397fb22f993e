//! A whole pipeline in memory: validator → contact importer → distribution scheduler →
//! notifier, with SQS simulated by a pump that redelivers failed messages and delivers every
//! message twice. Faults are injected; every record must be imported once and the run must
//! get exactly one distribution and one notification, which says how the run ended.

use std::sync::Arc;

use etlgen_runtime::config::Config;
use etlgen_runtime::kinds::{contacts, distribution, notifier, validator};
use etlgen_runtime::ports::{Services, Unconfigured};
use etlgen_runtime::qualtrics::{Body, Method};
use etlgen_runtime::runner::Runner;
use etlgen_runtime::testing::{
    FakeQualtrics, MemoryNotifications, MemoryObjectStore, MemoryQueue, sqs_event,
};
use serde_json::json;

#[derive(Debug, Default)]
struct Defaults;
impl validator::Hooks for Defaults {}
impl contacts::Hooks for Defaults {}
impl distribution::Hooks for Defaults {}
impl notifier::Hooks for Defaults {}

const CONFIG: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"

[steps.validate]
next_step = "import"
next_queue_url = "q://import"
batch_size = 2
primary_key = "id"
columns = [{ name = "id", required = true }, { name = "email", type = "email", required = true }]

[steps.import]
next_step = "invite"
next_queue_url = "q://invite"
directory_id = "POOL_1"
poll_interval_ms = 1

[steps.invite]
next_step = "notify"
next_queue_url = "q://notify"
survey_id = "SV_1"
library_id = "UR_1"
message_id = "MS_1"
from_email = "a@b.co"
from_name = "Acme"
subject = "Hi"

[steps.notify]
queue_url = "q://notify"
topic_arn = "arn:aws:sns:eu-west-1:123456789012:acme-test"
inputs_per_run = 1
"#;

/// The landed file: five valid rows (three batches of two) and two bad ones.
const CSV: &str =
    "id,email\n1,a@x.co\n2,b@x.co\nbad,not-mail\n3,c@x.co\n4,d@x.co\n1,dup@x.co\n5,e@x.co\n";

/// The ports of one pipeline, all in memory.
struct World {
    config: Config,
    services: Services,
    objects: Arc<MemoryObjectStore>,
    queue: Arc<MemoryQueue>,
    qualtrics: Arc<FakeQualtrics>,
    notifications: Arc<MemoryNotifications>,
}

impl World {
    fn new(config: &str) -> Self {
        let (objects, queue) = (
            Arc::new(MemoryObjectStore::default()),
            Arc::new(MemoryQueue::default()),
        );
        let (qualtrics, notifications) = (
            Arc::new(FakeQualtrics::default()),
            Arc::new(MemoryNotifications::default()),
        );
        let services = Services {
            qualtrics: qualtrics.clone(),
            objects: objects.clone(),
            queue: queue.clone(),
            notifications: notifications.clone(),
            sftp: Arc::new(Unconfigured("sftp")),
        };
        Self {
            config: Config::from_toml("test", config).unwrap(),
            services,
            objects,
            queue,
            qualtrics,
            notifications,
        }
    }

    /// Delivers `body` to `step` and says whether it succeeded.
    async fn deliver(&self, step: &str, body: &str) -> bool {
        let (config, services) = (self.config.clone(), self.services.clone());
        let event = sqs_event(&[body]);
        let response = match step {
            "validate" => {
                Runner::<validator::Validator<Defaults>>::new(step, config, services)
                    .unwrap()
                    .handle_event(event)
                    .await
            }
            "import" => {
                Runner::<contacts::ContactImporter<Defaults>>::new(step, config, services)
                    .unwrap()
                    .handle_event(event)
                    .await
            }
            "invite" => {
                Runner::<distribution::DistributionScheduler<Defaults>>::new(step, config, services)
                    .unwrap()
                    .handle_event(event)
                    .await
            }
            _ => {
                Runner::<notifier::Notifier<Defaults>>::new(step, config, services)
                    .unwrap()
                    .handle_event(event)
                    .await
            }
        };
        response.batch_item_failures.is_empty()
    }

    /// Lands `csv` and pumps messages until the pipeline settles: each message is
    /// delivered twice (an SQS duplicate), a failure comes back later, and everything sent
    /// goes on to its step's queue. Returns how many contact imports Qualtrics had been
    /// asked for when the first notification was published.
    async fn run(&self, csv: &str) -> Option<usize> {
        (self.objects).insert("landing", "in/2024-05-01/contacts.csv", csv.to_owned());
        let landed = include_str!("fixtures/s3-event.json")
            .replace("acme-landing", "landing")
            .replace(
                "landing/2024-05-01/contacts+list.csv",
                "in/2024-05-01/contacts.csv",
            );
        let mut pending: Vec<(String, String)> = vec![("validate".into(), landed)];
        let mut consumed = 0;
        let mut deliveries = 0;
        let mut imports_when_notified = None;
        while let Some((step, body)) = pending.pop() {
            deliveries += 1;
            assert!(deliveries < 200, "the pipeline does not settle");
            let first = self.deliver(&step, &body).await;
            let second = self.deliver(&step, &body).await;
            if !(first && second) {
                pending.insert(0, (step.clone(), body));
            }
            let sent = self.queue.sent();
            for (url, message) in sent.iter().skip(consumed) {
                pending.push((
                    url.trim_start_matches("q://").to_owned(),
                    message.body.clone(),
                ));
            }
            consumed = sent.len();
            if imports_when_notified.is_none() && !self.notifications.published().is_empty() {
                let imports = (self.qualtrics).requests_to(
                    Method::Post,
                    "directories/*/mailinglists/*/transactioncontacts",
                );
                imports_when_notified = Some(imports.len());
            }
        }
        imports_when_notified
    }

    /// Every notification's subject.
    fn subjects(&self) -> Vec<String> {
        (self.notifications.published().into_iter())
            .map(|(_, subject, _)| subject)
            .collect()
    }

    /// The one notification of the run: its subject and message.
    fn notification(&self) -> (String, String) {
        let published = self.notifications.published();
        assert_eq!(published.len(), 1, "one notification: {published:#?}");
        let (_, subject, message) = published.into_iter().next().unwrap();
        (subject, message)
    }
}

/// The config with the notifier reading the contact importer, a message per batch, and
/// told of failures.
fn notify_after_import() -> String {
    CONFIG
        .replace(
            "next_step = \"invite\"\nnext_queue_url = \"q://invite\"",
            "next_step = \"notify\"\nnext_queue_url = \"q://notify\"",
        )
        .replace("inputs_per_run = 1", "inputs_per_batch = 1")
        .replace(
            "data_bucket = \"data\"\n",
            "data_bucket = \"data\"\nnotifiers = [\"notify\"]\n",
        )
}

#[tokio::test]
async fn every_record_arrives_once_despite_faults_and_duplicates() {
    let world = World::new(CONFIG);
    world
        .qualtrics
        .on(Method::Post, "directories/POOL_1/mailinglists", json!({"id": "CG_1"}))
        // The first import attempt hits a server error; SQS brings the batch back.
        .fail(Method::Post, "directories/POOL_1/mailinglists/CG_1/transactioncontacts", 500)
        .on(Method::Post, "directories/POOL_1/mailinglists/CG_1/transactioncontacts", json!({"id": "PGRS_1"}))
        .on(
            Method::Get,
            "directories/POOL_1/mailinglists/CG_1/transactioncontacts/PGRS_1",
            json!({"percentComplete": 100, "status": "complete", "contacts": {"count": {"added": 2}}}),
        )
        .fail(Method::Post, "distributions", 503)
        .on(Method::Post, "distributions", json!({"id": "EMD_1"}));
    world.run(CSV).await;
    let World {
        qualtrics, objects, ..
    } = &world;
    let imports = qualtrics.requests_to(
        Method::Post,
        "directories/*/mailinglists/*/transactioncontacts",
    );
    let mut imported: Vec<String> = imports
        .iter()
        .skip(1) // the failed attempt
        .flat_map(|r| match &r.body {
            Body::Json(body) => body["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["extRef"].as_str().unwrap().to_owned())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    imported.sort();
    assert_eq!(
        imported,
        ["1", "2", "3", "4", "5"],
        "each valid record imported exactly once"
    );
    assert_eq!(
        qualtrics
            .requests_to(Method::Post, "directories/*/mailinglists")
            .len(),
        1,
        "one list per run"
    );
    let scheduled = qualtrics.requests_to(Method::Post, "distributions");
    assert_eq!(scheduled.len(), 2, "one 503, then exactly one distribution");
    let (subject, message) = world.notification();
    assert!(subject.ends_with("succeeded"), "{subject}");
    assert!(message.contains("EMD_1"), "{message}");
    let report = objects.keys("data", "reports/2024-05-01/");
    assert!(
        report.iter().any(|k| k.ends_with("rejected-000001.csv")),
        "{report:?}"
    );
}

/// A notifier reading a step that sends a message per batch notifies once, when the last
/// batch is imported, with the run's counts.
#[tokio::test]
async fn a_run_is_notified_once_after_its_last_batch() {
    let world = World::new(&notify_after_import());
    world
        .qualtrics
        .on(Method::Post, "directories/POOL_1/mailinglists", json!({"id": "CG_1"}))
        .on(Method::Post, "directories/POOL_1/mailinglists/CG_1/transactioncontacts", json!({"id": "PGRS_1"}))
        .on(
            Method::Get,
            "directories/POOL_1/mailinglists/CG_1/transactioncontacts/PGRS_1",
            json!({"percentComplete": 100, "status": "complete", "contacts": {"count": {"added": 2}}}),
        );
    let imports_when_notified = world.run(CSV).await;
    let (subject, message) = world.notification();
    assert!(subject.ends_with("succeeded"), "{subject}");
    for field in [r#""valid": 5"#, r#""rejected": 2"#, r#""batches": 3"#] {
        assert!(message.contains(field), "{field} in {message}");
    }
    assert_eq!(
        imports_when_notified,
        Some(3),
        "every batch was imported before the notification"
    );
}

/// Batches Qualtrics refuses for good (a 400) fail the run: the importer tells the
/// notifier of each, which says the run failed once. The importer passes their contacts
/// on as failed so the run goes on, and when it completes it is notified as completed
/// with failures, never as succeeded.
#[tokio::test]
async fn rejected_batches_are_notified_once_as_the_run_failing() {
    let world = World::new(&notify_after_import());
    world
        .qualtrics
        .on(
            Method::Post,
            "directories/POOL_1/mailinglists",
            json!({"id": "CG_1"}),
        )
        .fail(
            Method::Post,
            "directories/POOL_1/mailinglists/CG_1/transactioncontacts",
            400,
        );
    world.run(CSV).await;
    let subjects = world.subjects();
    assert_eq!(
        subjects,
        [
            "acme run 2024-05-01 failed",
            "acme run 2024-05-01 completed with failures"
        ]
    );
    let (_, _, failed) = &world.notifications.published()[0];
    assert!(failed.contains(r#""step": "import""#), "{failed}");
    assert!(failed.contains("s3://data/reports/2024-05-01/"), "{failed}");
    let (_, _, completed) = &world.notifications.published()[1];
    assert!(
        completed.contains(r#""rejected_messages": 3"#),
        "{completed}"
    );
    let failures = (world.queue.sent().into_iter())
        .filter(|(url, m)| url == "q://notify" && m.body.contains("\"failed\""))
        .count();
    assert!(
        failures >= 3,
        "each batch's rejection told the notifier: {failures}"
    );
}

/// A file without one valid record sends nothing on, so the validator tells the notifier
/// the run failed.
#[tokio::test]
async fn a_file_without_a_valid_record_is_notified_as_failing() {
    let world = World::new(&notify_after_import());
    world.run("id,email\nbad,not-mail\n").await;
    let (subject, message) = world.notification();
    assert!(subject.ends_with("failed"), "{subject}");
    assert!(
        message.contains("no valid record (1 rejected)"),
        "{message}"
    );
    assert!(world.qualtrics.requests().is_empty());
}
