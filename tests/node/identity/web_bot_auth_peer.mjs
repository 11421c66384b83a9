// Cloudflare's web-bot-auth (0.1.3) for tests/test_identity_agent.py. JSON on stdin, JSON on stdout.
//   sign:   {jwk (private), url, method, agent} -> {headers}
//   verify: {jwk (public), url, method, headers} -> {ok, error?}
import { signatureHeaders, verify } from "web-bot-auth";
import { signerFromJWK, verifierFromJWK } from "web-bot-auth/crypto";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const args = JSON.parse(Buffer.concat(chunks).toString());
const command = process.argv[2];

if (command === "sign") {
  const request = new Request(args.url, { method: args.method, headers: { "Signature-Agent": `"${args.agent}"` } });
  const now = new Date();
  const headers = await signatureHeaders(request, await signerFromJWK(args.jwk), {
    created: now,
    expires: new Date(now.getTime() + 60_000),
    components: ["@authority", "@method", "@path", "signature-agent"],
  });
  console.log(JSON.stringify({ headers: { ...headers, "Signature-Agent": `"${args.agent}"` } }));
} else if (command === "verify") {
  const request = new Request(args.url, { method: args.method, headers: args.headers });
  try {
    await verify(request, await verifierFromJWK(args.jwk));
    console.log(JSON.stringify({ ok: true }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e) }));
  }
}
