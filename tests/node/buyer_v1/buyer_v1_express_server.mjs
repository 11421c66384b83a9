// The official x402 v1 resource server (x402-express 1.2.0, the deprecated v1 line; pinned in this folder's
// package-lock.json) that paywire's buying client pays in v1: 402 with a v1 JSON body, X-PAYMENT, and
// X-PAYMENT-RESPONSE. v1 networks are names, so the devnet runs as chain 84532 ("base-sepolia").
// Env: FACILITATOR_URL, ASSET, PAY_TO, AMOUNT (atomic), TOKEN_NAME, TOKEN_VERSION.
// Prints "LISTENING <port>" once it accepts connections; GET /calls says how often the paid handler ran.
import express from "express";
import { paymentMiddleware } from "x402-express";

const env = process.env;
let calls = 0;
const app = express();
app.get("/calls", (_req, res) => res.json({ calls }));
app.use(
  paymentMiddleware(
    env.PAY_TO,
    {
      "GET /paid": {
        price: {
          amount: env.AMOUNT,
          asset: {
            address: env.ASSET,
            decimals: 6,
            eip712: { name: env.TOKEN_NAME, version: env.TOKEN_VERSION },
          },
        },
        network: "base-sepolia",
        config: { description: "paid by paywire's client (v1)", mimeType: "application/json" },
      },
    },
    { url: env.FACILITATOR_URL },
  ),
);
app.get("/paid", (_req, res) => {
  calls += 1;
  res.json({ server: "x402-express v1", calls });
});

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${listener.address().port}`);
});
process.on("SIGTERM", () => listener.close(() => process.exit(0)));
