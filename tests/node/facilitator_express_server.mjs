// The official TypeScript x402 resource server (@x402/express, pinned in package-lock.json) selling one
// route, settled through the facilitator at $FACILITATOR_URL (paywire's, in the test suite).
// Env: FACILITATOR_URL, NETWORK (CAIP-2), ASSET, PAY_TO, AMOUNT (atomic), TOKEN_NAME, TOKEN_VERSION.
// Prints "LISTENING <port>" once it accepts connections; GET /calls says how often the handler ran.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const env = process.env;
const facilitator = new HTTPFacilitatorClient({ url: env.FACILITATOR_URL });
const server = new x402ResourceServer(facilitator).register(env.NETWORK, new ExactEvmScheme());

let calls = 0;
const app = express();
app.get("/calls", (_req, res) => res.json({ calls }));
app.use(
  paymentMiddleware(
    {
      "GET /paid": {
        accepts: {
          scheme: "exact",
          network: env.NETWORK,
          payTo: env.PAY_TO,
          price: {
            amount: env.AMOUNT,
            asset: env.ASSET,
            extra: { name: env.TOKEN_NAME, version: env.TOKEN_VERSION },
          },
          maxTimeoutSeconds: 60,
        },
        description: "paid test resource",
        mimeType: "application/json",
      },
    },
    server,
  ),
);
app.get("/paid", (_req, res) => {
  calls += 1;
  res.json({ ok: true, calls });
});

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${listener.address().port}`);
});
process.on("SIGTERM", () => listener.close(() => process.exit(0)));
