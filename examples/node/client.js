#!/usr/bin/env node
// A minimal RMB client in Node, talking to a local rmb-peer through Redis: sends one
// request and prints the reply body (PROTOCOL.md section 4). `npm install` first.
//
//   node client.js --redis redis://127.0.0.1:6379 --dst 7 --cmd calc.add --data '[2, 3]'
const { createClient } = require('redis');
const { randomUUID } = require('crypto');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const timeout = Number(arg('timeout', '30'));
  const ret = `example.reply.${randomUUID()}`;
  const redis = createClient({ url: arg('redis', 'redis://localhost:6379') });
  await redis.connect();
  await redis.lPush('msgbus.system.local', JSON.stringify({
    ver: 1,
    ref: 'node-example',
    cmd: arg('cmd'),
    exp: timeout,
    dat: Buffer.from(arg('data', '')).toString('base64'),
    tag: null,
    dst: [Number(arg('dst'))],
    ret,
    shm: 'application/json',
    now: Math.floor(Date.now() / 1000),
  }));
  const popped = await redis.brPop(ret, timeout);
  await redis.quit();
  if (!popped) {
    console.error(`no reply within ${timeout} s`);
    return 3;
  }
  const reply = JSON.parse(popped.element);
  if (reply.err) {
    console.error(`error ${reply.err.code}: ${reply.err.message}`);
    return 2;
  }
  console.log(Buffer.from(reply.dat, 'base64').toString());
  return 0;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
