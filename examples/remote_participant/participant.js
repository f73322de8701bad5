// A saga participant in Node.js: the payment service of examples/remote_participant/saga.py.
//
// The contract (README, "Remote participants"; JSON Schemas in coordinator/schemas/):
// - consume {prefix}.step.{service}: one StepRequest (JSON) per attempt, keyed by saga_id;
// - reply with one StepResult (JSON) on the request's reply_to topic, keyed by saga_id,
//   partitioned like the Java client (murmur2): kafkajs' DefaultPartitioner does that;
// - apply each idempotency_key once: a retried attempt gets the stored answer again;
// - a compensation names the action it undoes in `compensates`; an undo whose do never
//   arrived is accepted and leaves a tombstone, so a late do with that key is refused;
// - never start an attempt after its `deadline` (reply with an "Expired" failure);
// - a failure says whether another attempt may help (`retryable`) and whether the effect
//   may have happened (`uncertain`); a business refusal is retryable=false, uncertain=false.
//
// Test knobs (in the saga input): amount_cents > 100000 is declined; lose_first_reply
// applies the first attempt but never answers it (the coordinator's deadline retries it).
//
// Every decision is printed as one JSON line, which the end-to-end test reads.

"use strict";

const { Kafka, Partitioners, logLevel } = require("kafkajs");

const brokers = (process.env.KAFKA_BOOTSTRAP_SERVERS || "127.0.0.1:19092").split(",");
const prefix = process.env.SAGA_TOPIC_PREFIX || "saga";
const service = process.env.SERVICE || "payment-node";
const topic = `${prefix}.step.${service}`;
const DECLINE_ABOVE_CENTS = 100000;

// The ledger: idempotency key -> what was done and answered. A real service keeps it in
// its database, in the same transaction as the effect.
const ledger = new Map();

function log(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function failure(type, message, { retryable, uncertain }) {
  return { ok: false, error: { type, message, retryable, uncertain } };
}

function charge(request) {
  const key = request.idempotency_key;
  const seen = ledger.get(key);
  if (seen && seen.state === "tombstone") {
    log("refused", { key, attempt: request.attempt });
    return failure("Compensated", `${key} was undone before it arrived`, {
      retryable: false,
      uncertain: false,
    });
  }
  if (seen) {
    log("replayed", { key, attempt: request.attempt });
    return seen.answer;
  }
  const amount = request.input.amount_cents;
  let answer;
  if (amount > DECLINE_ABOVE_CENTS) {
    answer = failure("CardDeclined", `card declined for ${amount} cents`, {
      retryable: false,
      uncertain: false,
    });
    log("declined", { key, attempt: request.attempt });
  } else {
    answer = { ok: true, output: { charge_id: `ch-${key}`, amount_cents: amount } };
    log("applied", { key, attempt: request.attempt });
  }
  ledger.set(key, { state: answer.ok ? "applied" : "declined", answer });
  return answer;
}

function refund(request) {
  const undone = request.compensates; // the action's idempotency key
  const seen = ledger.get(undone);
  if (!seen) {
    ledger.set(undone, { state: "tombstone" }); // a late do with this key is refused
    log("tombstoned", { key: undone, attempt: request.attempt });
  } else if (seen.state === "applied") {
    // the step's own output arrives with its compensation: no lookup needed to undo it
    const charged = request.outputs[request.step];
    seen.state = "undone";
    log("undone", { key: undone, charge_id: charged && charged.charge_id });
  } else {
    log("undo_replayed", { key: undone, state: seen.state });
  }
  return { ok: true, output: null };
}

function handle(request) {
  if (Date.parse(request.deadline) <= Date.now()) {
    log("expired", { key: request.idempotency_key, attempt: request.attempt });
    return failure("Expired", `not run: its deadline ${request.deadline} had passed`, {
      retryable: true,
      uncertain: false,
    });
  }
  return request.phase === "action" ? charge(request) : refund(request);
}

async function main() {
  const kafka = new Kafka({ clientId: service, brokers, logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId: process.env.GROUP_ID || `${prefix}-${service}` });
  // Java-compatible murmur2, like the coordinator: a reply lands on its saga's partition
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const lost = new Set();

  await consumer.run({
    // one message at a time per partition: the do and undo of one saga are serialized
    eachMessage: async ({ message }) => {
      const request = JSON.parse(message.value.toString());
      log("request", {
        key: request.idempotency_key,
        phase: request.phase,
        attempt: request.attempt,
        saga_id: request.saga_id,
      });
      const answer = handle(request);
      const key = request.idempotency_key;
      if (request.input.lose_first_reply && request.phase === "action" && !lost.has(key)) {
        lost.add(key);
        log("reply_lost", { key, attempt: request.attempt });
        return; // applied, never answered: the coordinator retries after the deadline
      }
      const result = {
        saga_id: request.saga_id,
        kind: "result",
        step: request.step,
        phase: request.phase,
        attempt: request.attempt,
        at: new Date().toISOString(),
        ...answer,
      };
      // the offset is committed after this resolves: at least once, never lost
      await producer.send({
        topic: request.reply_to,
        acks: -1,
        messages: [{ key: request.saga_id, value: JSON.stringify(result) }],
      });
    },
  });
  log("ready", { topic });

  const stop = async () => {
    await consumer.disconnect();
    await producer.disconnect();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exit(1);
});
