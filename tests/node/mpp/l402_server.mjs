// A small L402 server that paywire did not write: invoices from LNbits (REST), macaroons from the `macaroon`
// npm package (Go-compatible V2 binary), invoice decoding and header helpers from @getalby/lightning-tools.
// paywire's buyer pays it in tests/test_l402_node_peer.py.
//
// Config (env): LNBITS_URL, LNBITS_INVOICE_KEY (required); L402_PRICE_SATS (21); L402_SERVICES, a comma list of
// services, each served at GET /<name> with tokens for that service only ("weather");
// L402_TOKEN_TTL seconds (3600); L402_FORMS, a comma list of challenge forms, one WWW-Authenticate each:
//   macaroon -> L402 macaroon="M", invoice="I"              (aperture / BLIP-26)
//   lsat     -> LSAT macaroon="M", invoice="I"              (aperture's first header)
//   token    -> L402 version="0", token="M", invoice="I"    (the 2026 spec)
//   alby     -> makeL402AuthenticateHeader(): L402 version="0" token="M", invoice="I" (no comma after version)
// L402_ACCEPT_SCHEMES ("L402,LSAT"): credential schemes taken; "LSAT" alone acts like an LSAT-era server.
// Routes: GET /<service> (paid), GET /stats (free counters), POST /revoke (drops all root keys).
// Prints "LISTENING <port>" once bound to 127.0.0.1:0.
//
// Status codes (L402 spec, safe reading of spec-digest §10.1): no or malformed credential -> 402 + fresh
// challenge; well-formed credential failing verification (identifier, preimage, root key, signature, caveat)
// -> 401 + fresh challenge.

import { createHash, randomBytes } from "node:crypto";
import http from "node:http";

import { decodeInvoice } from "@getalby/lightning-tools/bolt11";
import { makeL402AuthenticateHeader, parseL402Authorization } from "@getalby/lightning-tools/402/l402";
import macaroon from "macaroon";

const LNBITS_URL = required("LNBITS_URL").replace(/\/+$/, "");
const INVOICE_KEY = required("LNBITS_INVOICE_KEY");
const PRICE = Number(process.env.L402_PRICE_SATS ?? "21");
const SERVICES = (process.env.L402_SERVICES ?? "weather").split(",").map((s) => s.trim()).filter(Boolean);
const TTL = Number(process.env.L402_TOKEN_TTL ?? "3600");
const FORMS = (process.env.L402_FORMS ?? "macaroon").split(",").map((s) => s.trim()).filter(Boolean);
const ACCEPT = (process.env.L402_ACCEPT_SCHEMES ?? "L402,LSAT").split(",").map((s) => s.trim());
const LOCATION = "lsat";

// root keys by sha256(identifier) hex, as aperture stores them; deleting one revokes the token
const rootKeys = new Map();
const stats = { challenges: 0, invoices: [], served: 0, servedByToken: {}, refused: {} };

function required(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
  return v;
}

const sha256 = (buf) => createHash("sha256").update(buf).digest();

async function createInvoice(service) {
  const r = await fetch(`${LNBITS_URL}/api/v1/payments`, {
    method: "POST",
    headers: { "X-Api-Key": INVOICE_KEY, "Content-Type": "application/json" },
    body: JSON.stringify({ out: false, amount: PRICE, unit: "sat", memo: `${service} (node L402)`, expiry: 600 }),
  });
  if (!r.ok) throw new Error(`LNbits invoice: HTTP ${r.status} ${await r.text()}`);
  const d = await r.json();
  const bolt11 = d.bolt11 ?? d.payment_request;
  const decoded = decodeInvoice(bolt11);
  if (!decoded || decoded.paymentHash !== d.payment_hash || decoded.satoshi !== PRICE) {
    throw new Error("LNbits returned an invoice that does not match the request");
  }
  return { bolt11, paymentHash: decoded.paymentHash };
}

function mint(paymentHashHex, service) {
  const tokenId = randomBytes(32);
  const identifier = Buffer.concat([Buffer.from([0, 0]), Buffer.from(paymentHashHex, "hex"), tokenId]);
  const rootKey = randomBytes(32);
  rootKeys.set(sha256(identifier).toString("hex"), rootKey);
  const m = macaroon.newMacaroon({ identifier: new Uint8Array(identifier), location: LOCATION,
                                   rootKey: new Uint8Array(rootKey), version: 2 });
  m.addFirstPartyCaveat(`services=${service}:0`);
  m.addFirstPartyCaveat(`${service}_valid_until=${Math.floor(Date.now() / 1000) + TTL}`);
  return Buffer.from(m.exportBinary()).toString("base64"); // standard base64 with padding, as aperture sends
}

function challengeHeaders(token, invoice) {
  return FORMS.map((form) => {
    switch (form) {
      case "macaroon": return `L402 macaroon="${token}", invoice="${invoice}"`;
      case "lsat": return `LSAT macaroon="${token}", invoice="${invoice}"`;
      case "token": return `L402 version="0", token="${token}", invoice="${invoice}"`;
      case "alby": return makeL402AuthenticateHeader({ token, invoice });
      default: throw new Error(`unknown challenge form ${form}`);
    }
  });
}

async function challenge(res, service, status, reason) {
  if (reason) stats.refused[reason] = (stats.refused[reason] ?? 0) + 1;
  const inv = await createInvoice(service);
  stats.challenges += 1;
  stats.invoices.push(inv.paymentHash);
  const token = mint(inv.paymentHash, service);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "WWW-Authenticate": challengeHeaders(token, inv.bolt11),
  });
  res.end(JSON.stringify({ error: status === 402 ? "payment required" : "invalid L402 credential", reason }));
}

// caveat satisfiers for a request to `service` (aperture's: services and <service>_valid_until); unknown
// conditions are skipped
const caveatChecker = (service) => (cond) => {
  const eq = cond.indexOf("=");
  if (eq < 0) return null;
  const key = cond.slice(0, eq);
  const value = cond.slice(eq + 1);
  if (key === "services") {
    const names = value.split(",").map((s) => s.trim().split(":")[0]);
    return names.includes(service) ? null : `service ${service} not granted`;
  }
  if (key === `${service}_valid_until`) {
    const until = Number(value);
    return Number.isFinite(until) && Math.floor(Date.now() / 1000) < until ? null : "token expired";
  }
  return null;
};

// -> { ok: true, paymentHash, tokenId } | { status, reason }
function verify(authorization, service) {
  const scheme = authorization.trim().split(" ", 1)[0];
  if (!ACCEPT.includes(scheme)) return { status: 402, reason: "scheme" };
  let parsed;
  try {
    parsed = parseL402Authorization(authorization.trim());
  } catch {
    parsed = null;
  }
  if (!parsed || !/^[0-9a-f]{64}$/i.test(parsed.preimage)) return { status: 402, reason: "malformed" };
  let m;
  try {
    m = macaroon.importMacaroon(parsed.token.split(",")[0]);
  } catch {
    return { status: 402, reason: "malformed" };
  }
  const id = Buffer.from(m.identifier);
  if (id.length !== 66 || id.readUInt16BE(0) !== 0) return { status: 401, reason: "identifier" };
  const paymentHash = id.subarray(2, 34);
  if (!sha256(Buffer.from(parsed.preimage, "hex")).equals(paymentHash)) return { status: 401, reason: "preimage" };
  const rootKey = rootKeys.get(sha256(id).toString("hex"));
  if (!rootKey) return { status: 401, reason: "unknown-root-key" };
  try {
    m.verify(new Uint8Array(rootKey), caveatChecker(service));
  } catch (err) {
    const msg = String(err && err.message);
    return { status: 401, reason: msg.startsWith("caveat check failed") ? "caveat" : "signature" };
  }
  return { ok: true, paymentHash: paymentHash.toString("hex"), tokenId: id.subarray(34).toString("hex") };
}

async function handle(req, res) {
  const path = new URL(req.url, "http://x").pathname;
  if (req.method === "GET" && path === "/stats") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(stats));
    return;
  }
  if (req.method === "POST" && path === "/revoke") { // aperture's revocation: forget every root key
    const revoked = rootKeys.size;
    rootKeys.clear();
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ revoked }));
    return;
  }
  const service = path.slice(1);
  if (req.method !== "GET" || !SERVICES.includes(service)) {
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ error: "not found" }));
    return;
  }
  const auth = req.headers.authorization;
  if (!auth) return challenge(res, service, 402, null);
  const v = verify(auth, service);
  if (!v.ok) return challenge(res, service, v.status, v.reason);
  stats.served += 1;
  stats.servedByToken[v.tokenId] = (stats.servedByToken[v.tokenId] ?? 0) + 1;
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ service, server: "node-l402", paymentHash: v.paymentHash,
                           run: stats.served }));
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    if (!res.headersSent) res.writeHead(500, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ error: String(err && err.message) }));
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
