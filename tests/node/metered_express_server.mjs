// The official TypeScript x402 resource server (@x402/express + @x402/evm, pinned in package-lock.json) selling
// GET /article (exact via Permit2) and GET /llm (upto; the handler charges $CHARGE with setSettlementOverrides),
// settled through the facilitator at $FACILITATOR_URL (paywire's, in the test suite).
// Env: FACILITATOR_URL, NETWORK, ASSET, PAY_TO, PRICE, MAXIMUM, CHARGE (atomic units), TOKEN_NAME, TOKEN_VERSION.
// Prints "LISTENING <port>" once it accepts connections; GET /calls says how often each handler ran.
import express from "express";
import { paymentMiddleware, setSettlementOverrides, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { UptoEvmScheme } from "@x402/evm/upto/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const env = process.env;
const facilitator = new HTTPFacilitatorClient({ url: env.FACILITATOR_URL });
const server = new x402ResourceServer(facilitator)
  .register(env.NETWORK, new ExactEvmScheme())
  .register(env.NETWORK, new UptoEvmScheme());
const extra = { name: env.TOKEN_NAME, version: env.TOKEN_VERSION };
const calls = { article: 0, llm: 0 };
const app = express();
app.get("/calls", (_req, res) => res.json(calls));
app.use(
  paymentMiddleware(
    {
      "GET /article": {
        accepts: {
          scheme: "exact", network: env.NETWORK, payTo: env.PAY_TO, maxTimeoutSeconds: 60,
          price: { amount: env.PRICE, asset: env.ASSET, extra: { ...extra, assetTransferMethod: "permit2" } },
        },
        description: "exact via Permit2", mimeType: "application/json",
      },
      "GET /llm": {
        accepts: {
          scheme: "upto", network: env.NETWORK, payTo: env.PAY_TO, maxTimeoutSeconds: 60,
          price: { amount: env.MAXIMUM, asset: env.ASSET, extra },
        },
        description: "metered", mimeType: "application/json",
      },
    },
    server,
  ),
);
app.get("/article", (_req, res) => {
  calls.article += 1;
  res.json({ ok: true });
});
app.get("/llm", (_req, res) => {
  calls.llm += 1;
  setSettlementOverrides(res, { amount: env.CHARGE });
  res.json({ tokens: 3 });
});

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${listener.address().port}`);
});
process.on("SIGTERM", () => listener.close(() => process.exit(0)));
