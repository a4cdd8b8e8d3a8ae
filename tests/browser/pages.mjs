// Cloakroom's pages in real headless Chromium: log in, the cookie is out of reach of page
// scripts, two browser contexts see each other in "your sessions", revoking the other logs it
// out on its next navigation, a tampered CSRF field is refused. A screenshot of each page goes
// to the output directory. Usage: node pages.mjs BASE_URL OUT_DIR USERNAME PASSWORD
import { args, check, launch } from './lib.mjs';

const [base, outDir, username, password] = args('pages.mjs', 'BASE_URL');
const browser = await launch();
try {
  const shot = (page, name) => page.screenshot({ path: `${outDir}/${name}.png`, fullPage: true });

  async function logIn(context, label) {
    const page = await context.newPage();
    await page.goto(`${base}/account/sessions`);
    check(page.url().startsWith(`${base}/login`), `${label}: an anonymous visit goes to the login page`);
    if (label === 'A') await shot(page, 'login');
    await page.fill('#username', username);
    await page.fill('#password', password);
    await Promise.all([page.waitForURL(`${base}/account/sessions`), page.click('button[type=submit]')]);
    check(page.url() === `${base}/account/sessions`, `${label}: logged in and back to the sessions page`);
    return page;
  }

  const a = await browser.newContext({ userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36' });
  const b = await browser.newContext({ userAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/140.0' });
  const pageA = await logIn(a, 'A');

  // The session cookie exists, is HttpOnly, and page scripts cannot see it.
  const cookies = await a.cookies();
  const session = cookies.find((c) => c.name === '__Host-cloakroom');
  check(session && session.httpOnly && session.secure && session.sameSite === 'Lax', 'the cookie is HttpOnly, Secure, SameSite=Lax');
  const visible = await pageA.evaluate(() => document.cookie);
  check(!visible.includes('__Host-cloakroom') && !visible.includes('crs_'), 'document.cookie does not show the session token');

  const pageB = await logIn(b, 'B');
  await pageA.reload();
  const rows = pageA.locator('#sessions tbody tr');
  check((await rows.count()) === 2, 'the sessions page lists both browsers');
  check((await pageA.locator('tr.current').count()) === 1, 'the current session is marked');
  check((await pageA.textContent('#sessions')).includes('Firefox on Windows'), 'the device is read from the user agent');
  await shot(pageA, 'sessions');

  // A tampered CSRF field is refused, and the other session lives on.
  await pageA.evaluate(() => {
    document.querySelectorAll('input[name=csrf_token]').forEach((i) => { i.value = 'tampered'; });
  });
  const refused = await Promise.all([
    pageA.waitForNavigation(),
    pageA.locator('tr:not(.current) button').first().click(),
  ]).then(([response]) => response.status());
  check(refused === 403, `a tampered CSRF field is refused (${refused})`);
  await shot(pageA, 'csrf-refused');
  await pageB.goto(`${base}/account/sessions`);
  check(pageB.url() === `${base}/account/sessions`, 'B is still logged in after the refused revocation');

  // Revoke B from A: B's next navigation goes to the login page.
  await pageA.goto(`${base}/account/sessions`);
  await Promise.all([pageA.waitForNavigation(), pageA.locator('tr:not(.current) button').first().click()]);
  check(pageA.url().endsWith('/account/sessions?done=revoked'), 'A revoked the other session');
  check((await pageA.locator('#sessions tbody tr').count()) === 1, 'one session left');
  await pageB.goto(`${base}/account/sessions`);
  check(pageB.url().startsWith(`${base}/login`), 'B is logged out on its next navigation');

  // The other pages render.
  await pageA.goto(`${base}/account/password`);
  check((await pageA.locator('#new_password').count()) === 1, 'the password page renders');
  await shot(pageA, 'password');
  await pageA.goto(`${base}/admin?username=${encodeURIComponent(username)}`);
  await shot(pageA, 'admin');
  check((await pageA.textContent('h1')).includes(username), 'the admin page finds the user');
} finally {
  await browser.close();
}
