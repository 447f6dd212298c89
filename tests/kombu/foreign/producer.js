// A foreign AMQP producer: Node.js amqplib publishing one message, as a non-Python service would.
// Usage: node producer.js <amqp url> <queue> <content type> < body
// The queue is declared durable (as balog declares it); the body is read from stdin as bytes.
"use strict";
const amqp = require("amqplib");

async function main() {
  const [url, queue, contentType] = process.argv.slice(2);
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(queue, { durable: true });
    channel.sendToQueue(queue, body, { contentType, persistent: true, messageId: "amqplib-1" });
    await channel.waitForConfirms();
  } finally {
    await connection.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
