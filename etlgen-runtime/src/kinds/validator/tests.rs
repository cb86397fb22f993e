//! Whole runs through the validator: rows checked as cells (default row hooks) give the
//! same messages and reports as rows checked as `Record`s (any row hook overridden), and
//! dedup past its memory budget sends and rejects the rows the in-memory set does.

use super::*;
use crate::kinds::RunManifest;
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

type Outcome = (Vec<String>, Vec<(String, String)>);

/// The message bodies and every object the run wrote.
async fn run<H: Hooks + Default>() -> Outcome {
    run_with::<H>("", FILE).await
}

/// The same with `settings` added to the step's and another file.
async fn run_with<H: Hooks + Default>(settings: &str, file: &str) -> Outcome {
    run_config::<H>(&format!("{CONFIG}{settings}"), file).await
}

/// The same with another config.
async fn run_config<H: Hooks + Default>(config: &str, file: &str) -> Outcome {
    let h = Harness::<Validator<H>>::new("validate", config);
    h.objects
        .insert("landing", "in/2024-05-01/file.csv", file.to_owned());
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
        version_id: None,
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

/// A file that is not UTF-8 text (an Excel export in Latin-1, say): its header cannot be
/// read as text, and reading it again cannot help, so the file is rejected with a report
/// saying what to fix, rather than retried into the dead-letter queue.
#[tokio::test]
async fn a_header_that_is_not_utf8_rejects_the_file_at_once() {
    let latin1 = b"Pr\xe9nom,id,email\nJos\xe9,1,a@b.co\n".to_vec();
    let (report, sent, reports) = rejected_for_good::<Defaults>(CONFIG, latin1).await;
    assert_eq!((sent, reports), (0, 1), "nothing sent, one report");
    assert!(report.contains("save it as UTF-8"), "{report}");
}

/// A redelivery reads the raw copy its first attempt made, even if the landing key has
/// been overwritten (a corrected file, which is a run of its own) or removed since.
#[tokio::test]
async fn a_redelivery_reads_the_raw_copy_not_the_landing_key_again() {
    let h = Harness::<Validator<Defaults>>::new("validate", CONFIG);
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
        version_id: None,
    };
    let input = h.envelope("file", source);
    let raw = zones::raw(input.logical_date, &input.run_id, "in/2024-05-01/file.csv");
    h.objects.insert("data", &raw, "id,email\n1,a@b.co\n");
    h.objects
        .insert("landing", "in/2024-05-01/file.csv", "id,email\n2,c@d.co\n");
    assert!(h.deliver(&input).await.batch_item_failures.is_empty());
    assert_eq!(
        h.objects.text("data", &raw).as_deref(),
        Some("id,email\n1,a@b.co\n"),
        "the raw zone is written once"
    );
    let sent: Vec<String> = h.queue.sent().into_iter().map(|(_, m)| m.body).collect();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].contains("a@b.co") && !sent[0].contains("c@d.co"),
        "{}",
        sent[0]
    );
}

/// A submission is named by its body. Sent again a week later (or redriven from the DLQ,
/// which renews `SentTimestamp`), a bare body is the same run, which the ledger skips
/// rather than repeating its effects; the wrapped form names its date, so a submission for
/// another day is another run.
#[tokio::test]
async fn a_submission_is_the_same_run_until_its_body_names_another_day() {
    let h = Harness::<Validator<Defaults>>::new("validate", CONFIG);
    let bare = "id,email\n1,a@b.co\n";
    let wrapped = |date: &str| {
        format!(r#"{{"logical_date":"{date}","records":[{{"id":1,"email":"a@b.co"}}]}}"#)
    };
    let (first, second) = (wrapped("2024-05-01"), wrapped("2024-05-08"));
    // 2024-05-01 and 2024-05-08, 08:00 UTC.
    let sends = [
        (bare, "1714550400000"),
        (bare, "1715155200000"),
        (&first, "1714550400000"),
        (&second, "1714550400000"),
    ];
    for (n, (body, sent)) in sends.into_iter().enumerate() {
        let mut event = crate::testing::sqs_message(&format!("post-{n}"), body);
        (event.records[0].attributes).insert("SentTimestamp".into(), sent.into());
        let response = h.runner.handle_event(event).await;
        assert!(response.batch_item_failures.is_empty());
    }
    let runs: std::collections::BTreeSet<(String, String)> = (h.emitted::<serde_json::Value>())
        .iter()
        .map(|e| (e.run_id.as_str().to_owned(), e.logical_date.to_string()))
        .collect();
    let mut dates: Vec<&str> = runs.iter().map(|(_, date)| date.as_str()).collect();
    dates.sort();
    assert_eq!(
        dates,
        ["2024-05-01", "2024-05-01", "2024-05-08"],
        "the bare body once, each wrapped date once: {runs:?}"
    );
}

/// Whether row `i` of [`many_keys`] is valid.
fn valid(i: u64) -> bool {
    !i.is_multiple_of(11) && i % 37 != 5 && i % 41 != 7
}

/// 300 rows over 113 keys, far apart and spelt three ways (`7`, `" 7 "`, `007`). Some rows are
/// invalid (a bad e-mail, a key that is no integer, too few fields), so their key does not
/// count and a later row with that key may be kept.
fn many_keys() -> String {
    let mut file = String::from("id,email,score,visited,note,note\n");
    for i in 0..300u64 {
        let id = (i * 7919) % 113;
        let id = match i {
            _ if i % 5 == 0 => format!("\" {id} \""),
            _ if i % 7 == 3 => format!("{id:03}"),
            _ => id.to_string(),
        };
        let email = if i % 11 == 0 {
            "nope".to_owned()
        } else {
            format!("p{i}@x.co")
        };
        let line = match i {
            _ if i % 37 == 5 => format!("x{id},{email},,,,\n"),
            _ if i % 41 == 7 => format!("{id},{email}\n"),
            _ => format!("{id},{email},,,,\n"),
        };
        file.push_str(&line);
    }
    file
}

fn temp_dir_setting(dir: &std::path::Path) -> String {
    format!(
        "temp_dir = {}\n",
        toml::Value::from(dir.display().to_string())
    )
}

/// An outcome with the order of rows left out: every record sent and every rejected row,
/// each sorted, and the other objects (raw copy, manifest, summary) as they are. Past its
/// memory, dedup sends and rejects the rows it left for later after the others.
fn unordered((bodies, objects): &Outcome) -> (Vec<String>, Vec<Vec<String>>, Vec<String>) {
    let mut records: Vec<String> = (bodies.iter())
        .flat_map(|body| {
            Envelope::<RecordBatch>::from_json(body)
                .unwrap()
                .payload
                .records
        })
        .map(|record| serde_json::Value::Object(record).to_string())
        .collect();
    records.sort();
    let mut rejected = Vec::new();
    let mut others = Vec::new();
    for (key, text) in objects {
        if key.contains("/rejected-") {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            rejected
                .extend((reader.records()).map(|r| r.unwrap().iter().map(str::to_owned).collect()));
        } else {
            others.push(format!("{key}: {text}"));
        }
    }
    rejected.sort();
    (records, rejected, others)
}

#[tokio::test]
async fn dedup_past_its_memory_gives_what_the_set_gives() {
    let file = many_keys();
    let expected = run_with::<Defaults>("", &file).await;
    let reports: String = (expected.1.iter())
        .filter(|(key, _)| key.contains("/rejected-"))
        .map(|(_, text)| text.as_str())
        .collect();
    // Counted here without the validator: a valid row whose key an earlier valid row has.
    let mut kept = std::collections::HashSet::new();
    let counted = (0..300u64)
        .filter(|&i| valid(i) && !kept.insert((i * 7919) % 113))
        .count();
    let duplicates = reports.matches("duplicate primary key").count();
    assert!(duplicates > 100, "{duplicates}: {reports}");
    for reason in ["not an e-mail", "not an integer", "unreadable CSV row"] {
        assert!(reports.contains(reason), "{reason}: {reports}");
    }
    assert_eq!(duplicates, counted, "{reports}");
    assert!(
        reports.contains(r#"duplicate primary key id = 7"#),
        "{reports}"
    );
    let dir = tempfile::tempdir().unwrap();
    // No key in memory, and 56 keys (the set fills mid-file). The filter holds at least 4
    // MiB, so here only repeated keys wait; a filter that calls new keys seen too, and
    // waiting rows decided a few at a time, are `seen`'s tests.
    for kb in [0, 1] {
        let settings = format!("{}dedup_memory_kb = {kb}\n", temp_dir_setting(dir.path()));
        let past = run_with::<Defaults>(&settings, &file).await;
        assert!(unordered(&past) == unordered(&expected), "{kb} KiB");
        assert!(past != expected, "{kb} KiB: the repeats are rejected last");
        assert!(
            run_with::<RowsAsRecords>(&settings, &file).await == past,
            "{kb} KiB"
        );
    }
}

/// The key column named twice: the last one is the key, for the hashes worked out ahead of
/// the checks as for the checks (the first one's values are all distinct).
#[tokio::test]
async fn the_key_is_the_last_column_of_its_name() {
    let mut file = String::from("id,email,id\n");
    for i in 0..150u64 {
        file.push_str(&format!("{},p{i}@x.co,{}\n", 1000 + i, i % 40));
    }
    let expected = run_with::<RowsAsRecords>("", &file).await;
    let reports: String = (expected.1.iter())
        .filter(|(key, _)| key.contains("/rejected-"))
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(reports.matches("duplicate primary key").count(), 110);
    assert!(run_with::<Defaults>("", &file).await == expected);
}

/// A key column no declaration names passes through as read, blanks included: `7` and
/// `" 7 "` are two keys, though the hash worked out ahead of the checks trims them alike.
#[tokio::test]
async fn an_undeclared_key_keeps_its_blanks() {
    let config = CONFIG.replace("primary_key = \"id\"", "primary_key = \"code\"");
    // The first batch's rows are checked as `Record`s (while the hooks are probed), so the
    // keys come after it.
    let file = "id,email,code\n1,a@b.co,a\n2,a@b.co,b\n3,a@b.co,c\n\
        4,a@b.co,7\n5,a@b.co, 7 \n6,a@b.co,7\n7,a@b.co, 7 \n";
    let expected = run_config::<RowsAsRecords>(&config, file).await;
    let reports: String = (expected.1.iter())
        .filter(|(key, _)| key.contains("/rejected-"))
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(
        reports.matches("duplicate primary key").count(),
        2,
        "{reports}"
    );
    assert!(run_config::<Defaults>(&config, file).await == expected);
}

/// The lines of the rejected rows, in report order, and their reasons.
fn rejected_lines(outcome: &Outcome) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, text) in &outcome.1 {
        if key.contains("/rejected-") {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            out.extend((reader.records()).map(|r| {
                let r = r.unwrap();
                (r[0].to_owned(), r[1].to_owned())
            }));
        }
    }
    out
}

/// Rows past the budget that may repeat a key wait, and come back last, in row order, with
/// their text as read: a repeat in the first batch (checked as a `Record`, then again as
/// cells), and cells that need quoting (a comma, quotes, a line break, non-ASCII).
#[tokio::test]
async fn rows_left_for_later_come_back_last_in_row_order_as_read() {
    let file = "id,email,note\n\
        5,a@b.co,plain\n\
        5,c@d.co,\"has, a comma \"\"quoted\"\"\nand a line break\"\n\
        6,e@f.co,x\n\
        7,nope,y\n\
        6,i@j.co,\"\u{e9}, \"\"q\"\"\"\n\
        8,k@l.co,z\n";
    let config = CONFIG.replace("report_rows = 2", "report_rows = 10");
    let expected = run_config::<Defaults>(&config, file).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{}dedup_memory_kb = 0\n", temp_dir_setting(dir.path()));
    let past = run_config::<Defaults>(&format!("{config}{settings}"), file).await;
    assert!(unordered(&past) == unordered(&expected));
    let reasons = |outcome: &Outcome| {
        (rejected_lines(outcome).into_iter())
            .map(|(line, reason)| format!("{line}: {reason}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(&expected),
        [
            "3: duplicate primary key id = 5",
            "5: column \"email\": \"nope\" is not an e-mail address",
            "6: duplicate primary key id = 6",
        ],
    );
    assert_eq!(
        reasons(&past),
        [
            "5: column \"email\": \"nope\" is not an e-mail address",
            "3: duplicate primary key id = 5",
            "6: duplicate primary key id = 6",
        ],
        "the rows that waited last, in row order"
    );
    assert!(
        unordered(&past)
            .1
            .iter()
            .any(|row| row[2].contains("quoted\\\"\\nand a line")),
        "{:?}",
        unordered(&past).1
    );
}

/// A row hook that decides a row differently the second time it sees it fails the run,
/// naming the line, rather than dropping or duplicating the row.
#[derive(Debug, Default)]
struct RejectsWhatItSaw(std::sync::Mutex<std::collections::HashSet<String>>);
impl Hooks for RejectsWhatItSaw {
    fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
        let email = row
            .get("email")
            .map(ToString::to_string)
            .unwrap_or_default();
        if !self.0.lock().unwrap().insert(email) {
            return Err("e-mail seen before".into());
        }
        validate_row(row, settings)
    }
}

#[tokio::test]
async fn a_row_hook_that_changes_its_mind_fails_the_run_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{}dedup_memory_kb = 0\n", temp_dir_setting(dir.path()));
    let file = "id,email\n1,a@b.co\n2,b@b.co\n1,c@d.co\n";
    let config = format!("{CONFIG}{settings}");
    let (text, ..) = rejected_for_good::<RejectsWhatItSaw>(&config, file).await;
    assert!(
        text.contains("line 4: a row that passed its checks failed them"),
        "{text}"
    );
    assert!(text.contains("must decide a row the same way"), "{text}");
}

/// Delivers `file` to a validator with `config`, whose run is rejected for good: not
/// retried, and the reason in a rejected-message report. The report's text, the messages
/// sent before, and how many report objects the run wrote.
async fn rejected_for_good<H: Hooks + Default>(
    config: &str,
    file: impl Into<bytes::Bytes>,
) -> (String, usize, usize) {
    let h = Harness::<Validator<H>>::new("validate", config);
    h.objects.insert("landing", "in/2024-05-01/file.csv", file);
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
        version_id: None,
    };
    let response = h.deliver(&h.envelope("file", source)).await;
    assert!(response.batch_item_failures.is_empty(), "not retried");
    let reports = h.objects.keys("data", "reports/");
    let report = reports.iter().find(|k| k.contains("/rejected/")).unwrap();
    let text = h.objects.text("data", report).unwrap();
    (text, h.queue.sent().len(), reports.len())
}

#[tokio::test]
async fn dedup_of_json_lines_past_its_memory_gives_what_the_set_gives() {
    // Keys as numbers and as their text are the same key.
    let file: String = (0..200u64)
        .map(|i| match (i * 31) % 67 {
            id if i % 3 == 0 => format!("{{\"id\":\"{id}\",\"email\":\"p{i}@x.co\"}}\n"),
            id => format!("{{\"id\":{id},\"email\":\"p{i}@x.co\"}}\n"),
        })
        .collect();
    // A repeated row with numbers JSON must carry exactly, and nested values: it waits, and
    // its report line shows it as read.
    let file = format!(
        "{file}{{\"id\":0,\"email\":\"f@x.co\",\"score\":0.1,\
         \"n\":{{\"a\":[1.0715660391465826e-75,2.5e-300,-0.0]}}}}\n"
    );
    let settings = "format = \"jsonl\"\n";
    let expected = run_with::<Defaults>(settings, &file).await;
    assert_eq!(
        expected.0.len(),
        67usize.div_ceil(3),
        "67 distinct keys in batches of 3"
    );
    let dir = tempfile::tempdir().unwrap();
    // No key in memory, and 56 (the set fills mid-file).
    for kb in [0, 1] {
        let spilling = format!(
            "{settings}{}dedup_memory_kb = {kb}\n",
            temp_dir_setting(dir.path())
        );
        let outcome = run_with::<Defaults>(&spilling, &file).await;
        assert!(unordered(&outcome) == unordered(&expected), "{kb} KiB");
        let reports = unordered(&outcome).1;
        assert!(
            reports
                .iter()
                .any(|r| r[2].contains("1.0715660391465826e-75") && r[2].contains("0.1")),
            "{reports:?}"
        );
    }
}

#[tokio::test]
async fn an_unwritable_temp_dir_fails_the_run_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let settings = format!(
        "{}dedup_memory_kb = 0\n",
        temp_dir_setting(&not_a_dir.join("tmp"))
    );
    let h = Harness::<Validator<Defaults>>::new("validate", &format!("{CONFIG}{settings}"));
    h.objects
        .insert("landing", "in/2024-05-01/file.csv", many_keys());
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
        version_id: None,
    };
    let response = h.deliver(&h.envelope("file", source)).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(h.queue.sent().is_empty());
}

/// `rows` rows of `width` bytes of text each, keyed 1 to `rows`.
fn wide_rows(rows: usize, width: usize) -> String {
    let mut file = String::from("id,email,note\n");
    for id in 1..=rows {
        file.push_str(&format!("{id},r{id}@b.co,{}\n", "n".repeat(width)));
    }
    file
}

const WIDE: &str = r#"
[pipeline]
name = "acme"
data_bucket = "data"
[steps.validate]
next_step = "load"
next_queue_url = "https://sqs.test/load"
batch_size = 1000
primary_key = "id"
columns = [{ name = "id", type = "integer", required = true }]
"#;

/// 700 rows of 2 KB are 1.4 MB in one batch of `batch_size = 1000`, over SQS's message
/// limit: the batch goes as parts that fit, every row once and in order, and the manifest
/// counts the parts, so the fan-in waits for each.
#[tokio::test]
async fn a_batch_over_the_message_limit_goes_as_parts() {
    let file = wide_rows(700, 2_000);
    let compact = run_config::<Defaults>(WIDE, &file).await;
    assert!(compact == run_config::<BatchesAsRecords>(WIDE, &file).await);
    let (bodies, objects) = compact;
    assert!(bodies.len() > 1, "{} messages", bodies.len());
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for body in &bodies {
        assert!(
            body.len() <= crate::step::MAX_MESSAGE_BYTES,
            "{}",
            body.len()
        );
        let envelope = Envelope::<RecordBatch>::from_json(body).unwrap();
        keys.push(envelope.record_key);
        ids.extend(
            envelope
                .payload
                .records
                .iter()
                .map(|r| r["id"].as_i64().unwrap()),
        );
    }
    assert_eq!(ids, (1..=700).collect::<Vec<_>>());
    let expected: Vec<String> = (1..=bodies.len())
        .map(|part| format!("batch-000001.{part}"))
        .collect();
    assert_eq!(keys, expected);
    let manifest = objects
        .iter()
        .find(|(key, _)| key.ends_with("/manifest.json"))
        .map(|(_, text)| serde_json::from_str::<RunManifest>(text).unwrap())
        .unwrap();
    assert_eq!(manifest.batches, bodies.len() as u64);
}

/// A single row too large for any message rejects the file, saying so, and sends nothing.
#[tokio::test]
async fn a_row_over_the_message_limit_rejects_the_file() {
    let file = wide_rows(1, crate::step::MAX_MESSAGE_BYTES);
    let (text, sent, _) = rejected_for_good::<Defaults>(WIDE, file).await;
    assert_eq!(sent, 0);
    assert!(text.contains("the file's rows must be smaller"), "{text}");
}

/// The client overwrites the landed file before the validator gets to it: the run the
/// event started copies the version the event announced, not the key's new content, which
/// is a run of its own (its own event, its own ETag).
#[tokio::test]
async fn the_raw_copy_is_the_version_the_event_announced() {
    let h = Harness::<Validator<Defaults>>::new("validate", CONFIG);
    let key = "landing/2024-05-01/contacts list.csv";
    h.objects
        .insert("acme-landing", key, "id,email\n1,first@b.co\n");
    let announced = h.objects.version_id("acme-landing", key).unwrap();
    h.objects
        .insert("acme-landing", key, "id,email\n2,second@b.co\n");
    let event = include_str!("../../../tests/fixtures/s3-event.json").replace(
        r#""eTag": "0123456789abcdef0123456789abcdef","#,
        &format!(r#""eTag": "0123456789abcdef0123456789abcdef", "versionId": "{announced}","#),
    );
    assert!(event.contains(&announced));
    let response = h.deliver_body(&event).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let raw = h.objects.keys("data", "raw/");
    assert_eq!(raw.len(), 1, "{raw:?}");
    let copied = h.objects.text("data", &raw[0]).unwrap();
    assert!(copied.contains("first@b.co"), "{copied}");
    let bodies: Vec<String> = h.queue.sent().into_iter().map(|(_, m)| m.body).collect();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].contains("first@b.co"), "{}", bodies[0]);
}

/// A rejection whose telling fails (SQS throttling the notifier's queue) fails the message,
/// and its redelivery finds the report and only tells: the notifier hears of the run's
/// failure, and on-call is not told twice.
#[tokio::test]
async fn a_rejection_the_notifiers_missed_is_told_on_redelivery() {
    let config = format!(
        "{}\n[steps.notify]\nqueue_url = 'https://sqs.test/notify'\n",
        CONFIG
            .replace(
                "data_bucket = \"data\"\n",
                "data_bucket = \"data\"\nnotifiers = [\"notify\"]\n[runtime]\nfailure_topic_arn = 'arn:oncall'\n",
            )
    );
    let h = Harness::<Validator<Defaults>>::new("validate", &config);
    h.objects.insert(
        "landing",
        "in/2024-05-01/file.csv",
        &b"id,\xe9mail\n1,a@b.co\n"[..],
    );
    let source = Source::Object {
        bucket: "landing".into(),
        key: "in/2024-05-01/file.csv".into(),
        version_id: None,
    };
    let body = h.envelope("file", source).to_json().unwrap();
    h.queue.refuse("https://sqs.test/notify");
    let first = h
        .runner
        .handle_event(crate::testing::sqs_event(&[&body]))
        .await;
    assert_eq!(first.batch_item_failures.len(), 1, "retried to tell");
    h.queue.accept("https://sqs.test/notify");
    let mut again = crate::testing::sqs_event(&[&body]);
    (again.records[0].attributes).insert("ApproximateReceiveCount".into(), "2".into());
    let second = h.runner.handle_event(again).await;
    assert!(second.batch_item_failures.is_empty(), "{second:?}");
    let told: Vec<String> = (h.queue.sent().into_iter())
        .filter(|(url, _)| url == "https://sqs.test/notify")
        .map(|(_, m)| m.body)
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("UTF-8"), "{}", told[0]);
    assert_eq!(h.notifications.published().len(), 1, "on-call told once");
    // A replay is another message with the same keys: it runs, whatever an earlier
    // message's report says.
    let mut replay = crate::testing::sqs_message("replay-1", &body);
    (replay.records[0].attributes).insert("ApproximateReceiveCount".into(), "2".into());
    assert!(
        h.runner
            .handle_event(replay)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        h.notifications.published().len(),
        2,
        "the replay ran and was rejected"
    );
}
