// The first-run setup link in real headless Chromium: open it, create the administrator, land
// logged in on the sessions page; the link then no longer works.
// Usage: node setup.mjs SETUP_LINK OUT_DIR USERNAME PASSWORD
import { args, check, launch } from './lib.mjs';

const [link, outDir, username, password] = args('setup.mjs', 'SETUP_LINK');
const browser = await launch();
try {
  const base = new URL(link).origin;
  const page = await (await browser.newContext()).newPage();
  const first = await page.goto(link);
  check(first.status() === 200, 'the setup link opens the form');
  await page.screenshot({ path: `${outDir}/setup.png`, fullPage: true });
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.fill('#confirm_password', password);
  await Promise.all([page.waitForURL(`${base}/account/sessions`), page.click('button[type=submit]')]);
  check((await page.textContent('#sessions')).includes('this device'), 'the administrator is logged in');
  await page.goto(`${base}/admin`);
  check(page.url() === `${base}/admin`, 'and has the admin page');
  const again = await page.goto(link);
  check(again.status() === 403, 'the link works once');
} finally {
  await browser.close();
}
