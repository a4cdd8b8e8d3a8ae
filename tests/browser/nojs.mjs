// The pages' flows in Chromium with JavaScript switched off: log in, see the sessions, a refused
// password change (the two copies differ), log out. Usage: node nojs.mjs BASE_URL OUT_DIR USERNAME PASSWORD
import { args, check, launch } from './lib.mjs';

const [base, outDir, username, password] = args('nojs.mjs', 'BASE_URL');
const browser = await launch();
try {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${base}/account/sessions`);
  check(page.url().startsWith(`${base}/login`), 'without JavaScript: an anonymous visit goes to the login page');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${base}/account/sessions`), page.click('button[type=submit]')]);
  check((await page.locator('#sessions tr.current').count()) === 1, 'without JavaScript: logged in, this device marked');
  await page.goto(`${base}/account/password`);
  await page.fill('#current_password', password);
  await page.fill('#new_password', 'a brand new secret');
  await page.fill('#confirm_password', 'a brand new secrte');
  await Promise.all([page.waitForLoadState('load'), page.click('main button[type=submit]')]);
  check((await page.textContent('[role=alert]')).includes('not the same'), 'without JavaScript: the mismatch is refused on the page');
  await page.screenshot({ path: `${outDir}/nojs-password-refused.png`, fullPage: true });
  await Promise.all([page.waitForURL(/\/login/), page.click('header button')]);
  await page.goto(`${base}/account/sessions`);
  check(page.url().startsWith(`${base}/login`), 'without JavaScript: logged out');
} finally {
  await browser.close();
}
