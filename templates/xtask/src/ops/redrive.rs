//! `redrive`: a step's dead-letter messages back to its queue.

use anyhow::{Context, Result, ensure};
use etlgen_runtime::local::aws_sdk_sqs;
use etlgen_runtime::local::aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use etlgen_runtime::step::SEND_BATCH_BYTES;

use super::{Env, Redrive, block_on};

pub fn redrive(args: Redrive) -> Result<()> {
    block_on(async {
        let env = Env::open(&args.target).await?;
        let step = env.step(&args.step)?;
        let task = env
            .sqs
            .start_message_move_task()
            .source_arn(&step.dlq_arn)
            .destination_arn(&step.queue_arn)
            .send()
            .await;
        match task {
            Ok(task) => {
                println!(
                    "Started moving the dead letters of {} back to its queue (task {}); `aws sqs list-message-move-tasks --source-arn {}` shows its progress.",
                    args.step,
                    task.task_handle().unwrap_or("?"),
                    step.dlq_arn
                );
                return Ok(());
            }
            // Only the local emulator lacks the call. Elsewhere a refusal means something an
            // engineer must see (a move task already running on this DLQ, no permission,
            // throttling): moving the messages by hand beside a running task would race it
            // and, on a FIFO queue, interleave its groups.
            Err(e) if args.target.env != "local" => {
                return Err(anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
                    .with_context(|| {
                        format!(
                            "starting the move of {}'s dead letters failed; if a move is already \
                         running, `aws sqs list-message-move-tasks --source-arn {}` shows it, \
                         and this command can be run again once it is done",
                            args.step, step.dlq_arn
                        )
                    });
            }
            Err(e) => eprintln!(
                "StartMessageMoveTask is not available here ({}); moving the messages one batch at a time instead.",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ),
        }
        let moved = move_messages(&env.sqs, &step.dlq_url, &step.queue_url).await?;
        println!("Moved {moved} dead-letter messages of {} back to its queue.", args.step);
        Ok(())
    })
}

/// Receives from `from` and re-sends to `to` (body, attributes, FIFO group), deleting each
/// message only once it is sent, until `from` is empty. A crash in between can duplicate a
/// message, never lose one; the steps are idempotent.
async fn move_messages(sqs: &aws_sdk_sqs::Client, from: &str, to: &str) -> Result<u64> {
    let fifo = to.ends_with(".fifo");
    let mut moved = 0;
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let received = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("receiving from {from}"))?;
        let messages = received.messages();
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        let mut sends = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let attribute = |name: MessageSystemAttributeName| {
                m.attributes().and_then(|a| a.get(&name)).cloned()
            };
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(m.body().unwrap_or_default())
                .set_message_attributes(m.message_attributes().cloned());
            if fifo {
                entry = entry
                    .message_group_id(
                        attribute(MessageSystemAttributeName::MessageGroupId)
                            .unwrap_or_else(|| "redrive".into()),
                    )
                    .message_deduplication_id(m.message_id().unwrap_or_default());
            }
            sends.push(entry.build()?);
        }
        for batch in by_payload(sends) {
            let sent = sqs
                .send_message_batch()
                .queue_url(to)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(crate::sdk_error)
                .with_context(|| format!("sending to {to}"))?;
            ensure!(
                sent.failed().is_empty(),
                "{} messages could not be sent to {to}; they stay in {from}",
                sent.failed().len()
            );
        }
        let deletes = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        sqs.delete_message_batch()
            .queue_url(from)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("deleting the moved messages from {from}"))?;
        moved += messages.len() as u64;
    }
    Ok(moved)
}

/// `entries` in order, cut so that no `SendMessageBatch` carries more than SQS's payload
/// limit: ten large step outputs, received together, are over it.
fn by_payload(
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Vec<Vec<SendMessageBatchRequestEntry>> {
    let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.message_body().len();
        match batches.last_mut() {
            Some(batch) if bytes + size <= SEND_BATCH_BYTES => {
                bytes += size;
                batch.push(entry);
            }
            _ => {
                bytes = size;
                batches.push(vec![entry]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_under_the_payload_limit_in_order() {
        let entry = |id: usize, bytes: usize| {
            SendMessageBatchRequestEntry::builder()
                .id(id.to_string())
                .message_body("x".repeat(bytes))
                .build()
                .unwrap()
        };
        let big = SEND_BATCH_BYTES / 3;
        let batches = by_payload((0..10).map(|i| entry(i, big)).collect());
        let ids: Vec<Vec<&str>> =
            batches.iter().map(|b| b.iter().map(|e| e.id()).collect()).collect();
        assert_eq!(ids, [vec!["0", "1", "2"], vec!["3", "4", "5"], vec!["6", "7", "8"], vec!["9"]]);
        assert_eq!(by_payload((0..10).map(|i| entry(i, 10)).collect()).len(), 1);
    }
}
