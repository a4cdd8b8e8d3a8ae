// Every page at a desktop width (1280 px) and a phone width (390 px), light and dark: axe-core
// finds no serious or critical violation, nothing scrolls sideways, and a screenshot of each goes
// to the output directory (`a11y-<page>-<width>[-dark].png`). The user must be an admin, with a
// second session so that the sessions page has a row to log out.
// Usage: node a11y.mjs BASE_URL OUT_DIR USERNAME PASSWORD
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { args, check, launch } from './lib.mjs';

const [base, outDir, username, password] = args('a11y.mjs', 'BASE_URL');
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const browser = await launch();

async function audit(page, name, label) {
  // axe is injected by the test, not the page: the pages' CSP allows no script (bypassCSP below).
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () => await window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const detail = bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  check(bad.length === 0, `${label}: no serious or critical axe-core violation${detail.length ? ` -- ${detail.join('; ')}` : ''}`);
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(wide <= 0, `${label}: nothing scrolls sideways (${wide} px too wide)`);
  await page.screenshot({ path: `${outDir}/a11y-${name}.png`, fullPage: true });
}

try {
  for (const [width, height] of [[1280, 800], [390, 844]]) {
    for (const scheme of ['light', 'dark']) {
      const suffix = `${width}${scheme === 'dark' ? '-dark' : ''}`;
      const context = await browser.newContext({
        viewport: { width, height }, colorScheme: scheme, bypassCSP: true,
        userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36',
      });
      const page = await context.newPage();
      await page.goto(`${base}/login`);
      await audit(page, `login-${suffix}`, `login at ${suffix}`);
      // A refused login: the error is announced and tied to the field.
      await page.fill('#username', username);
      await page.fill('#password', 'not the password');
      await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
      check((await page.locator('[role=alert]').count()) === 1, `refused login at ${suffix}: the error is an alert`);
      check((await page.getAttribute('#password', 'aria-describedby')) === 'form-error', `refused login at ${suffix}: the field points at the error`);
      await audit(page, `login-refused-${suffix}`, `refused login at ${suffix}`);
      await page.fill('#username', username);
      await page.fill('#password', password);
      await Promise.all([page.waitForURL(`${base}/account/sessions`), page.click('button[type=submit]')]);
      await audit(page, `sessions-${suffix}`, `sessions at ${suffix}`);
      const named = await page.locator('#sessions tbody button').evaluateAll((bs) => bs.map((b) => b.getAttribute('aria-label') || b.textContent));
      check(named.length > 0 && named.every((n) => /^Log out .+/.test(n)), `sessions at ${suffix}: each button names the device it logs out (${named.join(' | ')})`);
      const tall = await page.locator('button').evaluateAll((bs) => bs.every((b) => b.getBoundingClientRect().height >= 44));
      check(tall, `sessions at ${suffix}: every button is at least 44 px tall`);
      await page.goto(`${base}/account/password`);
      await audit(page, `password-${suffix}`, `password at ${suffix}`);
      await page.goto(`${base}/admin`);
      await audit(page, `admin-list-${suffix}`, `the admin's user list at ${suffix}`);
      await page.goto(`${base}/admin?username=${encodeURIComponent(username)}`);
      await audit(page, `admin-${suffix}`, `admin at ${suffix}`);
      await page.goto(`${base}/admin/api-keys`);
      await audit(page, `api-keys-${suffix}`, `API keys at ${suffix}`);
      await page.goto(`${base}/admin/audit`);
      await audit(page, `audit-${suffix}`, `the audit log at ${suffix}`);
      await page.goto(`${base}/setup?token=guess`);
      await audit(page, `message-${suffix}`, `an error page at ${suffix}`);
      await context.close();
    }
  }
} finally {
  await browser.close();
}
