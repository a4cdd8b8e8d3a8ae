// A single-page app on another allowed origin, in real headless Chromium: it logs in with
// fetch(…, {credentials: "include"}), reads its session and CSRF token (CORS lets it), and
// ends its other sessions with the token; a page on an origin that is not allowed cannot read
// the session. Usage: node spa.mjs CLOAKROOM_URL OUT_DIR USERNAME PASSWORD SPA_URL OTHER_URL
import { args, check, launch } from './lib.mjs';

const [api, outDir, username, password] = args('spa.mjs', 'CLOAKROOM_URL');
const [spa, other] = process.argv.slice(6, 8);
if (!spa || !other) {
  console.error('usage: node spa.mjs CLOAKROOM_URL OUT_DIR USERNAME PASSWORD SPA_URL OTHER_URL');
  process.exit(2);
}
const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(spa);
  const result = await page.evaluate(async ({ api, username, password }) => {
    const json = { 'content-type': 'application/json' };
    const login = await fetch(`${api}/v1/login`, {
      method: 'POST', credentials: 'include', headers: json,
      body: JSON.stringify({ username, password }),
    });
    const session = await fetch(`${api}/v1/session`, { credentials: 'include' });
    const body = await session.json();
    const refused = await fetch(`${api}/v1/sessions/revoke-others`, { method: 'POST', credentials: 'include' });
    const done = await fetch(`${api}/v1/sessions/revoke-others`, {
      method: 'POST', credentials: 'include', headers: { 'x-csrf-token': body.csrf_token },
    });
    return { login: login.status, session: session.status, user: body.session.user.username,
             refused: refused.status, done: done.status };
  }, { api, username, password });
  check(result.login === 200, `the SPA logs in across origins (${result.login})`);
  check(result.session === 200 && result.user === username, 'and reads its session and CSRF token');
  check(result.refused === 403, `a write without the token is refused (${result.refused})`);
  check(result.done === 200, `with the token it works (${result.done})`);

  // A page on an origin that is not allowed: the browser keeps the answer from it.
  await page.goto(other);
  const read = await page.evaluate(async (api) => {
    try {
      await fetch(`${api}/v1/session`, { credentials: 'include' });
      return 'read';
    } catch (e) {
      return 'blocked';
    }
  }, api);
  check(read === 'blocked', `another origin cannot read the session (${read})`);
} finally {
  await browser.close();
}
