//! A whole pipeline in memory: validator → contact importer → distribution scheduler →
//! notifier, with SQS simulated by a pump that redelivers failed messages and delivers every
//! message twice. Faults are injected; every record must be imported once and the run must
//! get exactly one distribution and one notification.

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
topic_arn = "arn:aws:sns:eu-west-1:123456789012:acme-test"
"#;

#[tokio::test]
async fn every_record_arrives_once_despite_faults_and_duplicates() {
    let config = Config::from_toml("test", CONFIG).unwrap();
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
    qualtrics
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

    let runner = |step: &str| {
        let (config, services) = (config.clone(), services.clone());
        let step = step.to_owned();
        move |body: String| {
            let (config, services, step) = (config.clone(), services.clone(), step.clone());
            async move {
                let event = sqs_event(&[&body]);
                let response = match step.as_str() {
                    "validate" => {
                        Runner::<validator::Validator<Defaults>>::new(&step, config, services)
                            .unwrap()
                            .handle_event(event)
                            .await
                    }
                    "import" => {
                        Runner::<contacts::ContactImporter<Defaults>>::new(&step, config, services)
                            .unwrap()
                            .handle_event(event)
                            .await
                    }
                    "invite" => {
                        Runner::<distribution::DistributionScheduler<Defaults>>::new(
                            &step, config, services,
                        )
                        .unwrap()
                        .handle_event(event)
                        .await
                    }
                    _ => {
                        Runner::<notifier::Notifier<Defaults>>::new(&step, config, services)
                            .unwrap()
                            .handle_event(event)
                            .await
                    }
                };
                response.batch_item_failures.is_empty()
            }
        }
    };

    // The landed file: five valid rows (three batches of two) and two bad ones.
    let csv =
        "id,email\n1,a@x.co\n2,b@x.co\nbad,not-mail\n3,c@x.co\n4,d@x.co\n1,dup@x.co\n5,e@x.co\n";
    objects.insert("landing", "in/2024-05-01/contacts.csv", csv);
    let landed = include_str!("fixtures/s3-event.json")
        .replace("acme-landing", "landing")
        .replace(
            "landing/2024-05-01/contacts+list.csv",
            "in/2024-05-01/contacts.csv",
        );
    let mut pending: Vec<(String, String)> = vec![("validate".into(), landed)];
    let mut consumed = 0;
    let mut deliveries = 0;
    while let Some((step, body)) = pending.pop() {
        deliveries += 1;
        assert!(deliveries < 200, "the pipeline does not settle");
        // Each message is delivered twice (an SQS duplicate); a failure comes back later.
        let first = runner(&step)(body.clone()).await;
        let second = runner(&step)(body.clone()).await;
        if !(first && second) {
            pending.insert(0, (step.clone(), body));
        }
        // Everything sent since the last look goes on to its step's queue.
        let sent = queue.sent();
        for (url, message) in sent.iter().skip(consumed) {
            pending.push((
                url.trim_start_matches("q://").to_owned(),
                message.body.clone(),
            ));
        }
        consumed = sent.len();
    }

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
    assert_eq!(notifications.published().len(), 1, "one notification");
    let report = objects.keys("data", "reports/2024-05-01/");
    assert!(
        report.iter().any(|k| k.ends_with("rejected-000001.csv")),
        "{report:?}"
    );
}
