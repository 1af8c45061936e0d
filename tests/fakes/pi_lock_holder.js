// Takes pi's auth.json lock with the proper-lockfile that ships with an installed
// pi, using the exact options pi 0.73.1 uses (dist/core/auth-storage.js), so tests
// can check that takod's Python lock interoperates with the real thing.
//
// usage: node pi_lock_holder.js <pi package dir> <mode> <auth.json> [count]
//   hold   take pi's refresh lock; print "locked"; release when stdin ends or a
//          line arrives; print "released" (or "compromised <code>" and exit 3)
//   wait   try pi's startup lock once (print "busy" if held), then wait with pi's
//          refresh-lock retries; print "locked", release, print "released"
//   count  <count> times: take the refresh lock, read auth.json, increment
//          .counter, write it back in place (as pi does), release; print "done"
// Errors print "error <code>" and exit 2.
"use strict";

const fs = require("fs");
const readline = require("readline");

const [piDir, mode, authPath, countArg] = process.argv.slice(2);
const lockfile = require(require.resolve("proper-lockfile", { paths: [piDir] }));

let compromised = null;
// pi's withLockAsync options, verbatim.
const refreshOptions = {
  retries: { retries: 10, factor: 2, minTimeout: 100, maxTimeout: 10000, randomize: true },
  stale: 30000,
  onCompromised: (err) => {
    compromised = err;
  },
};

function say(line) {
  process.stdout.write(line + "\n");
}

function stdinDone() {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.once("line", () => resolve());
    rl.once("close", () => resolve());
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function hold() {
  const release = await lockfile.lock(authPath, refreshOptions);
  say("locked");
  await stdinDone();
  if (compromised) {
    say("compromised " + compromised.code);
    process.exit(3);
  }
  await release();
  say("released");
}

async function wait() {
  try {
    // pi's startup lock: given path, default stale, no retries.
    const release = lockfile.lockSync(authPath, { realpath: false });
    release();
    say("free");
  } catch (err) {
    if (err.code !== "ELOCKED") throw err;
    say("busy");
  }
  const release = await lockfile.lock(authPath, refreshOptions);
  say("locked");
  await release();
  say("released");
}

async function count(times) {
  for (let i = 0; i < times; i++) {
    const release = await lockfile.lock(authPath, refreshOptions);
    const data = JSON.parse(fs.readFileSync(authPath, "utf-8"));
    data.counter = (data.counter || 0) + 1;
    await sleep(5); // widen the window a broken lock would let another writer in
    fs.writeFileSync(authPath, JSON.stringify(data, null, 2), "utf-8");
    if (compromised) throw compromised;
    await release();
  }
  say("done");
}

const modes = { hold, wait, count: () => count(Number(countArg)) };
if (!modes[mode]) {
  say("error EUSAGE");
  process.exit(2);
}
modes[mode]().then(
  () => process.exit(0), // stdin may still be open; nothing else is pending
  (err) => {
    say("error " + (err.code || err.message));
    process.exit(2);
  },
);
