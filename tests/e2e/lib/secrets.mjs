// The leak check at the end of each suite: no secret the broker was given or the tests obtained may
// appear in the broker's log or its audit table. The browser-side twin of tests/it/multi.rs
// `production_brokers_keep_tokens_and_keys_out_of_logs`.

import assert from 'node:assert/strict';

/** A JWT (`eyJ…` header, `.`, `eyJ…` claims): an ID, access or refresh token, whatever its issuer. */
const JWT = /eyJ[A-Za-z0-9_-]{7,}\.eyJ/;

/** Whether `text` holds a JWT. */
export function containsJwt(text) {
  return JWT.test(text);
}

/**
 * Collects named secrets. Values shorter than 16 characters are refused (`minLength` to say
 * otherwise): a short value could match by chance, and a secret that short is itself a bug.
 */
export class Secrets {
  constructor() {
    this.items = [];
  }

  /** Adds `value` as `name` (e.g. `session cookie jit_session`). */
  add(name, value, { minLength = 16 } = {}) {
    assert.equal(typeof value, 'string', `${name} is not a string`);
    assert.ok(value.length >= minLength, `${name} is only ${value.length} characters: too short to look for`);
    if (!this.items.some((s) => s.value === value)) this.items.push({ name, value });
  }

  /** Adds the value of every cookie `context` holds, at least 16 characters long (the short ones are flags). */
  async addCookies(context, who) {
    for (const c of await context.cookies()) {
      if (c.value.length >= 16) this.add(`${who}'s cookie ${c.name} (${c.domain})`, c.value);
    }
  }

  /** The names of the secrets in `text` (never the values: the failure message is logged too). */
  foundIn(text) {
    return this.items.filter((s) => text.includes(s.value)).map((s) => s.name);
  }

  /** Fails if `text` (what `where` names) holds a secret or a JWT. */
  assertAbsent(text, where) {
    assert.deepEqual(this.foundIn(text), [], `secrets appear in ${where}`);
    assert.ok(!containsJwt(text), `a JWT appears in ${where}`);
  }
}

/** The scanner finds what it is meant to find: without this, a broken check would pass forever. */
export function selfCheck() {
  assert.ok(containsJwt('x eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln y'), 'a JWT is not recognised');
  assert.ok(!containsJwt('eyJhbGciOiJSUzI1NiJ9 and eyJzdWIiOiJ4In0'), 'two lone base64 JSON parts are a JWT');
  const probe = new Secrets();
  probe.add('probe', 'c2VjcmV0LXZhbHVlLWZvci10aGUtc2Nhbm5lcg');
  assert.deepEqual(probe.foundIn('a=1 key=c2VjcmV0LXZhbHVlLWZvci10aGUtc2Nhbm5lcg b=2'), ['probe']);
  assert.deepEqual(probe.foundIn('a=1 key=c2VjcmV0LXZhbHVlLWZvci10aGUtc2Nhbm5l b=2'), []);
  assert.throws(() => probe.assertAbsent('x c2VjcmV0LXZhbHVlLWZvci10aGUtc2Nhbm5lcg', 'a sample'));
  assert.throws(() => probe.add('short', 'abc'));
}
