//! Whole runs through the validator: rows checked as cells (default row hooks) give the
//! same messages and reports as rows checked as `Record`s (any row hook overridden).

use super::*;
use crate::testing::Harness;

const CONFIG: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[steps.validate]
next_step = "load"
next_queue_url = "https://sqs.test/load"
batch_size = 3
report_rows = 2
primary_key = "id"
columns = [
  { name = "id", type = "integer", required = true },
  { name = "email", type = "email", required = true },
  { name = "score", type = "number" },
  { name = "visited", type = "date" },
]
"#;

/// Valid and invalid rows, repeated keys (`7` and ` 7 `), a repeated header name, text
/// that JSON escapes, and a row of the wrong length.
const FILE: &str = "id,email,score,visited,note,note\n\
    1,a@b.co,1.5,2024-05-01,x,\"last \"\"wins\"\"\"\n\
    2,nope,,,,\n\
    3,c@d.co,,,,\t\u{e9}\\\n\
    7,e@f.co, 2 ,,,\n\
    \" 7 \",g@h.co,,,,\n\
    x,i@j.co,,,,\n\
    8,k@l.co\n\
    9,m@n.co,,2024-02-30,,\n\
    10,o@p.co,,,,\n\
    11,q@r.co,,, a ,\n";

#[derive(Debug, Default)]
struct Defaults;
impl Hooks for Defaults {}

/// Overrides `validate_row` with what the default does, so rows are `Record`s.
#[derive(Debug, Default)]
struct RowsAsRecords;
impl Hooks for RowsAsRecords {
    fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
        validate_row(row, settings)
    }
}

/// Overrides `choose_output` with what the default does, so batches become `RecordBatch`es.
#[derive(Debug, Default)]
struct BatchesAsRecords;
impl Hooks for BatchesAsRecords {
    fn choose_output(&self, batch: RecordBatch, batch_number: u64) -> Vec<Output<RecordBatch>> {
        choose_output(batch, batch_number)
    }
}

/// The message bodies and every object the run wrote.
async fn run<H: Hooks + Default>() -> (Vec<String>, Vec<(String, String)>) {
    let h = Harness::<Validator<H>>::new("validate", CONFIG);
    h.objects.insert("landing", "in/2024-05-01/file.csv", FILE);
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
    };
    let response = h.deliver(&h.envelope("file", source)).await;
    assert!(response.batch_item_failures.is_empty());
    let bodies = h.queue.sent().into_iter().map(|(_, m)| m.body).collect();
    let objects = h
        .objects
        .keys("data", "")
        .into_iter()
        .map(|key| {
            let text = h.objects.text("data", &key).unwrap_or_default();
            (key, text)
        })
        .collect();
    (bodies, objects)
}

#[tokio::test]
async fn default_hooks_give_what_overridden_hooks_give() {
    let (bodies, objects) = run::<RowsAsRecords>().await;
    assert_eq!(
        bodies.len(),
        2,
        "two batches of three valid rows: {bodies:#?}"
    );
    assert!(
        bodies[0].contains(r#""note":"last \"wins\"""#),
        "{}",
        bodies[0]
    );
    assert!(bodies[0].contains(r#""id":1,"#), "{}", bodies[0]);
    let reports: String = objects
        .iter()
        .filter(|(key, _)| key.contains("/rejected-"))
        .map(|(_, text)| text.as_str())
        .collect();
    for reason in [
        "not an e-mail",
        "duplicate primary key id = 7",
        "not an integer",
        "unreadable CSV row",
        "not a YYYY-MM-DD",
    ] {
        assert!(reports.contains(reason), "{reason}: {reports}");
    }
    assert_eq!(run::<Defaults>().await, (bodies.clone(), objects.clone()));
    assert_eq!(run::<BatchesAsRecords>().await, (bodies, objects));
}
