// An Express app that asks Cloakroom whether the browser's session cookie is live, with the
// service API (`POST /v1/admin/sessions/validate`, an API key from `cloakroom apikey create NAME`).
// The browser sends the `__Host-cloakroom` cookie here when this app and Cloakroom share an origin
// (one proxy in front, Cloakroom under a path such as /auth).
// Run by crates/server/tests/snippets.rs.
'use strict';
const express = require('express');

const CLOAKROOM_URL = process.env.CLOAKROOM_URL; // e.g. http://127.0.0.1:7878
const API_KEY = process.env.CLOAKROOM_API_KEY; // crk_…
if (!CLOAKROOM_URL || !API_KEY) throw new Error('set CLOAKROOM_URL and CLOAKROOM_API_KEY');

// Puts the session's user ({id, username, roles}) on req.user; 401 without a live session, 503
// when Cloakroom cannot answer (fail closed: nobody gets in on a guess).
async function requireSession(req, res, next) {
  const cookie = (req.get('cookie') || '').split(';').map((c) => c.trim())
    .find((c) => c.startsWith('__Host-cloakroom='));
  if (!cookie) return res.status(401).json({ error: 'login required' });
  let r, body;
  try {
    r = await fetch(`${CLOAKROOM_URL}/v1/admin/sessions/validate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ token: cookie.slice('__Host-cloakroom='.length) }),
      signal: AbortSignal.timeout(3000),
    });
    body = await r.json();
  } catch {
    return res.status(503).json({ error: 'sign-in unavailable' }); // unreachable, or no answer
  }
  if (r.status === 200) { req.user = body.session.user; return next(); }
  if (r.status === 401) return res.status(401).json({ error: 'login required' });
  // 5xx; or 403, the key is no API key. (A wrong or deleted key gets 401, as a dead session does:
  // if every session looks invalid, check the key.)
  res.status(503).json({ error: 'sign-in unavailable' });
}

const app = express();
app.get('/me', requireSession, (req, res) => res.json(req.user));

// The cookie is authentication only: pages that change state also need a CSRF defence (the
// browser's Sec-Fetch-Site, or the session's CSRF token), as Cloakroom's own API applies.
const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
