// The official TypeScript x402 client (@x402/fetch + @x402/evm exact and upto, pinned in package-lock.json) pays
// a paywire seller's Permit2 / upto routes: `node metered_fetch_client.mjs PRIVATE_KEY NETWORK ASSET URL...`.
// Prints one JSON line: a list of {status, body, paymentResponse} in URL order.
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { privateKeyToAccount } from "viem/accounts";

const [key, network, asset, ...urls] = process.argv.slice(2);
if (!key || !network || !asset || urls.length === 0) {
  console.error("usage: node metered_fetch_client.mjs PRIVATE_KEY NETWORK ASSET URL...");
  process.exit(2);
}
const account = privateKeyToAccount(key);
const client = new x402Client()
  .register(network, new ExactEvmScheme(account))
  .register(network, new UptoEvmScheme(account))
  .setSpendControls({ allowedAssets: [{ network, asset }] });
const fetchWithPayment = wrapFetchWithPayment(fetch, client);
try {
  const results = [];
  for (const url of urls) {
    const response = await fetchWithPayment(url);
    const body = await response.text();
    const header = response.headers.get("PAYMENT-RESPONSE");
    results.push({ status: response.status, body, paymentResponse: header ? decodePaymentResponseHeader(header) : null });
  }
  console.log(JSON.stringify(results));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  process.exit(1);
}
