"""A saga whose payment step runs in Node.js (participant.js), through Kafka only."""
