// The official TypeScript x402 client (@x402/fetch + @x402/evm, pinned in package-lock.json) pays a paywire
// seller: `node seller_fetch_client.mjs URL PRIVATE_KEY NETWORK ASSET`. ASSET (our devnet token, not one of the
// SDK's default USDC deployments) is allow-listed in the client's spend controls. Prints one JSON line:
// {status, body, paymentResponse} where paymentResponse is the decoded PAYMENT-RESPONSE header (or null).
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, network, asset] = process.argv.slice(2);
if (!url || !key || !network || !asset) {
  console.error("usage: node seller_fetch_client.mjs URL PRIVATE_KEY NETWORK ASSET");
  process.exit(2);
}
const client = new x402Client()
  .register(network, new ExactEvmScheme(privateKeyToAccount(key)))
  .setSpendControls({ allowedAssets: [{ network, asset }] });
const fetchWithPayment = wrapFetchWithPayment(fetch, client);
try {
  const response = await fetchWithPayment(url);
  const body = await response.text();
  const header = response.headers.get("PAYMENT-RESPONSE") || response.headers.get("X-PAYMENT-RESPONSE");
  console.log(JSON.stringify({
    status: response.status,
    body,
    paymentResponse: header ? decodePaymentResponseHeader(header) : null,
  }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  process.exit(1);
}
