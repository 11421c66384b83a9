// The official TypeScript x402 resource server (@x402/express + @x402/evm batch-settlement, pinned in
// package-lock.json) selling GET /metered, settled through the facilitator at $FACILITATOR_URL (paywire's in the
// test suite, which also signs claims and refunds as the receiver authorizer it advertises).
// Env: FACILITATOR_URL, NETWORK, ASSET, PAY_TO, PRICE (atomic units), TOKEN_NAME, TOKEN_VERSION.
// Prints "LISTENING <port>" once it accepts connections; GET /calls says how often the handler ran.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const env = process.env;
const facilitator = new HTTPFacilitatorClient({ url: env.FACILITATOR_URL });
const server = new x402ResourceServer(facilitator).register(env.NETWORK, new BatchSettlementEvmScheme(env.PAY_TO));
const extra = { name: env.TOKEN_NAME, version: env.TOKEN_VERSION };
const calls = { metered: 0 };
const app = express();
app.get("/calls", (_req, res) => res.json(calls));
app.use(
  paymentMiddleware(
    {
      "GET /metered": {
        accepts: {
          scheme: "batch-settlement", network: env.NETWORK, payTo: env.PAY_TO, maxTimeoutSeconds: 300,
          price: { amount: env.PRICE, asset: env.ASSET, extra },
        },
        description: "metered", mimeType: "application/json",
      },
    },
    server,
  ),
);
app.get("/metered", (_req, res) => {
  calls.metered += 1;
  res.json({ tokens: 3 });
});

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${listener.address().port}`);
});
process.on("SIGTERM", () => listener.close(() => process.exit(0)));
