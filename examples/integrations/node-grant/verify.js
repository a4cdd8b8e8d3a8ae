#!/usr/bin/env node
// Verifies a Cloakroom grant offline, with the `paseto` package: node verify.js TOKEN AUDIENCE
// [--redeem]. Prints the claims as JSON and exits 0, or says why not and exits 1. CLOAKROOM_URL
// says where Cloakroom publishes its keys. Run by crates/server/tests/snippets.rs.
//
// Offline verification checks the signature, the audience and the validity period. It cannot know
// whether the grant was already used, nor whether it was revoked since: single use is Cloakroom's,
// through POST /v1/grants/redeem (--redeem). Verify offline only where a replay within the grant's
// lifetime (60 s by default) does no harm, or keep a replay cache of the `jti`s you have seen.
import { InspectFooter, PublicProtocol } from 'paseto';
import { ImportPublicKeyFactory, VerifyFactory } from 'paseto/v4/public';

const [token, audience, flag] = process.argv.slice(2);
const base = process.env.CLOAKROOM_URL; // e.g. http://127.0.0.1:7878
const v4 = new PublicProtocol(ImportPublicKeyFactory, VerifyFactory);

async function verify() {
  // The footer, {"kid":"k4.pid.…"}, names the signing key; the signature covers it. (A service
  // caches the keys, and fetches them again when a grant names one it does not know.)
  const { kid } = JSON.parse(new TextDecoder().decode(InspectFooter(token)));
  const r = await fetch(`${base}/v1/keys`);
  if (!r.ok) throw new Error(`GET /v1/keys: ${r.status}`);
  const known = (await r.json()).keys.find((k) => k.id === kid);
  if (!known) throw new Error('unknown signing key');
  const { claims } = await v4.Verify(await v4.ImportPublicKey(known.paserk), token, {
    // Cloakroom binds the audience into the signature as well as the `aud` claim.
    implicitAssertion: new TextEncoder().encode(`cloakroom-grant:${audience}`),
    audience,
    requiredClaims: ['jti', 'sub', 'username', 'nbf', 'exp'],
    clockTolerance: 5, // seconds of clock skew on nbf and iat ...
  });
  if (Date.now() >= Date.parse(claims.exp)) throw new Error('expired'); // ... but none on exp
  if (claims.typ !== 'cloakroom-grant') throw new Error('not a grant');
  return claims;
}

async function redeem() {
  const r = await fetch(`${base}/v1/grants/redeem`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token, audience }),
  });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`redeem: ${r.status} ${body.error?.code}`);
}

try {
  if (!token || !audience || !base || ![undefined, '--redeem'].includes(flag)) {
    throw new Error('usage: CLOAKROOM_URL=… verify.js TOKEN AUDIENCE [--redeem]');
  }
  const claims = await verify();
  if (flag === '--redeem') await redeem(); // once only: a second redeem is a 409
  console.log(JSON.stringify(claims));
} catch (e) {
  console.error(`grant refused: ${e.message}`);
  process.exit(1);
}
