// Shared by the browser tests: arguments, assertions that print TAP-like lines, Chromium.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

/** The four arguments every script takes (the first is a URL); exits 2 when one is missing. */
export function args(script, first) {
  const values = process.argv.slice(2, 6);
  if (values.length < 4 || values.some((v) => !v)) {
    console.error(`usage: node ${script} ${first} OUT_DIR USERNAME PASSWORD`);
    process.exit(2);
  }
  mkdirSync(values[1], { recursive: true });
  return values;
}

/** Fails the script when `cond` is false; prints `ok - what` otherwise. */
export function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

/** Debian's headless Chromium (or $CHROMIUM). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
}
