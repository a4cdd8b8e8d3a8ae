// An ordinary HTML form of an app behind nginx forward-auth, in real headless Chromium: after
// logging in on Cloakroom's page (reached through the proxy, and back to the form by `next`),
// the form posts and reaches the app; the same form on another origin is refused.
// Usage: node forms.mjs PUBLIC_URL OUT_DIR USERNAME PASSWORD OTHER_ORIGIN_PAGE_URL
import { args, check, launch } from './lib.mjs';

const [base, outDir, username, password] = args('forms.mjs', 'PUBLIC_URL');
const other = process.argv[6];
if (!other) {
  console.error('usage: node forms.mjs PUBLIC_URL OUT_DIR USERNAME PASSWORD OTHER_ORIGIN_PAGE_URL');
  process.exit(2);
}
const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();

  // Anonymous: the proxy sends the browser to Cloakroom's login page, which comes back here.
  await page.goto(`${base}/app/form?from=menu&tab=2`);
  check(page.url().startsWith(`${base}/auth/login?next=`), `the proxy sends an anonymous visitor to the login page (${page.url()})`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${base}/app/form?from=menu&tab=2`), page.click('button[type=submit]')]);
  check(page.url() === `${base}/app/form?from=menu&tab=2`, 'after logging in, back on the form with its whole query string');

  // The app's own form posts: Chromium sends Sec-Fetch-Site: same-origin, and no CSRF header.
  const [posted] = await Promise.all([page.waitForNavigation(), page.click('button')]);
  check(posted.status() === 200, `the form on the app posts through the proxy (${posted.status()})`);
  const seen = JSON.parse(await page.textContent('body'));
  check(seen.method === 'POST' && seen.path === '/app/transfer', 'the app received the POST');
  check(seen.headers['x-cloakroom-username'] === username, 'with the user in X-Cloakroom-Username');
  await page.screenshot({ path: `${outDir}/form-posted.png`, fullPage: true });

  // The same form on another origin (same site: the Lax cookie goes along) is refused.
  await page.goto(other);
  const [refused] = await Promise.all([page.waitForNavigation(), page.click('button')]);
  check(refused.status() === 403, `a form on another origin is refused (${refused.status()})`);
  await page.screenshot({ path: `${outDir}/form-refused.png`, fullPage: true });
} finally {
  await browser.close();
}
