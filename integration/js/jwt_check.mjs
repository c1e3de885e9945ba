// Decodes and encodes NATS JWTs with the official JavaScript implementation
// (@nats-io/jwt, @nats-io/nkeys), so that the tokens lclstream writes by hand
// can be checked against it (integration/tests/jwt_crosscheck.rs).
//
// Reads one JSON object from stdin:
//
//   {
//     "decode": [{"label": "...", "token": "...", "issuer": "account"}, ...],
//     "encode": {
//       "account_seed": "SA...", "server_seed": "SN...", "user_public_key": "U...",
//       "users": [{"label": "...", "name": "...", "aud": "LCLS", "exp": 1700000000,
//                  "permissions": {"pub": {...}, "sub": {...}, "resp": {...}}}, ...],
//       "refusal": "why not",
//       "request": {"exp": 1700000000, "nats": {"server_id": {...}, "user_nkey": "U...", ...}}
//     }
//   }
//
// and writes one JSON object to stdout:
//
//   {
//     "decoded": [{"label": "...", "ok": true, "header": {...}, "claims": {...},
//                  "jti_go": "...", "jti_js": "..."}
//               | {"label": "...", "ok": false, "error": "..."}, ...],
//     "encoded": {"users": {"<label>": "...", ...}, "allow": "...", "refuse": "...",
//                 "request": "..."}
//   }
//
// The encoded tokens are: a user JWT per entry of "users" (subject the user
// key, issuer the account); an authorization response allowing with the
// first of those user JWTs and one refusing with "refusal" (subject the user
// key, audience the server, issuer the account); an authorization request
// (issuer the server key, audience "nats-authorization-request").
//
// A token whose signature does not verify, or whose issuer is not of the
// expected kind, is reported with "ok": false and never decoded.
//
// `jti_go` is the jti nats-io/jwt (Go, used by nats-server and nsc) would
// compute for the decoded standard claims: base32 without padding of the
// SHA-512/256 of the JSON of ClaimsData (aud, exp, jti, iat, iss, name, nbf,
// sub in that order, empty ones omitted) with jti empty. `jti_js` is the jti
// this JavaScript library computes: standard base64 of the SHA-512 of the
// whole claims JSON before jti is added. The two schemes differ; nats-server
// never checks jti.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  Base64UrlCodec,
  checkKey,
  decode,
  encodeAuthorizationResponse,
  encodeGeneric,
  encodeUser,
} from "@nats-io/jwt";
import { fromSeed } from "@nats-io/nkeys";

const ISSUER_PREFIX = {
  operator: "O",
  account: "A",
  user: "U",
  server: "N",
};

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32NoPad(bytes) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) {
    out += BASE32[(value << (5 - bits)) & 31];
  }
  return out;
}

function goJti(claims) {
  const data = {};
  for (const key of ["aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub"]) {
    const v = key === "jti" ? "" : claims[key];
    if (v !== undefined && v !== "" && v !== 0 && v !== null) {
      data[key] = v;
    }
  }
  const digest = createHash("sha512-256").update(JSON.stringify(data)).digest();
  return base32NoPad(digest);
}

function jsJti(claims) {
  const { jti: _jti, ...rest } = claims;
  return createHash("sha512").update(JSON.stringify(rest)).digest("base64");
}

function decodeOne({ label, token, issuer }) {
  try {
    const prefix = ISSUER_PREFIX[issuer];
    if (prefix === undefined) {
      throw new Error(`unknown issuer kind ${JSON.stringify(issuer)}`);
    }
    // Verifies the ed25519 signature with the `iss` key; throws otherwise.
    const claims = decode(token);
    checkKey(claims.iss, prefix);
    const header = JSON.parse(Base64UrlCodec.decode(token.split(".")[0]));
    return {
      label,
      ok: true,
      header,
      claims,
      jti_go: goJti(claims),
      jti_js: jsJti(claims),
    };
  } catch (e) {
    return { label, ok: false, error: String(e?.message ?? e) };
  }
}

async function encodeAll(spec) {
  const seed = (s) => fromSeed(new TextEncoder().encode(s));
  const account = seed(spec.account_seed);
  const server = seed(spec.server_seed);
  const user = spec.user_public_key;
  const users = {};
  for (const { label, name, aud, exp, permissions } of spec.users) {
    users[label] = await encodeUser(name, user, account, { ...permissions }, {
      aud,
      exp,
    });
  }
  const allow = await encodeAuthorizationResponse(
    user,
    server.getPublicKey(),
    account,
    { jwt: users[spec.users[0].label] },
    {},
  );
  const refuse = await encodeAuthorizationResponse(
    user,
    server.getPublicKey(),
    account,
    { error: spec.refusal },
    {},
  );
  // The library has no encoder for authorization requests (nats-server
  // writes those); the generic encoder signs one with the server key.
  const request = await encodeGeneric(
    "authorization request",
    server,
    "authorization_request",
    { ...spec.request.nats },
    { aud: "nats-authorization-request", exp: spec.request.exp },
  );
  return { users, allow, refuse, request };
}

async function main() {
  const input = JSON.parse(readFileSync(0, "utf8"));
  const output = {
    decoded: (input.decode ?? []).map(decodeOne),
  };
  if (input.encode) {
    output.encoded = await encodeAll(input.encode);
  }
  process.stdout.write(JSON.stringify(output));
}

main().catch((e) => {
  process.stderr.write(`jwt_check: ${e?.stack ?? e}\n`);
  process.exit(1);
});
