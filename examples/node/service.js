#!/usr/bin/env node
// A minimal RMB service in Node, talking to a local rmb-peer through Redis.
// Serves `calc.add`: the request body is a JSON list of numbers, the reply their sum.
// Requests arrive on `msgbus.<command>`; replies go to `msgbus.system.reply`
// (PROTOCOL.md section 4). `npm install` first.
//
//   node service.js --redis redis://127.0.0.1:6379 [--cmd calc.add] [--count N]
const { createClient } = require('redis');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const cmd = arg('cmd', 'calc.add');
  const count = Number(arg('count', '0'));
  const redis = createClient({ url: arg('redis', 'redis://localhost:6379') });
  await redis.connect();
  console.log(`serving ${cmd}`);
  for (let served = 0; !count || served < count; served++) {
    const { element } = await redis.brPop(`msgbus.${cmd}`, 0);
    const request = JSON.parse(element);
    let body = '';
    let err = null;
    try {
      const numbers = JSON.parse(Buffer.from(request.dat, 'base64').toString());
      if (!Array.isArray(numbers)) throw new Error('not a list');
      body = JSON.stringify(numbers.reduce((a, b) => a + b, 0));
    } catch (e) {
      err = { code: 400, message: `expected a JSON list of numbers: ${e.message}` };
    }
    await redis.lPush('msgbus.system.reply', JSON.stringify({
      ver: 1,
      ref: request.ref,
      dat: Buffer.from(body).toString('base64'),
      dst: request.src,
      shm: request.shm,
      now: Math.floor(Date.now() / 1000),
      err,
    }));
  }
  await redis.quit();
}

main().catch((e) => { console.error(e); process.exit(1); });
