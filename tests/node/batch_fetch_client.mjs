// The official TypeScript x402 client (@x402/fetch + @x402/evm batch-settlement, pinned in package-lock.json)
// pays a paywire seller's batch-settlement route N times, then asks for a cooperative refund:
// `node batch_fetch_client.mjs PRIVATE_KEY NETWORK ASSET COUNT URL`.
// Prints one JSON line: {results: [{status, paymentResponse}], refund: SettleResponse}.
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/client";
import { privateKeyToAccount } from "viem/accounts";

const [key, network, asset, count, url] = process.argv.slice(2);
if (!key || !network || !asset || !count || !url) {
  console.error("usage: node batch_fetch_client.mjs PRIVATE_KEY NETWORK ASSET COUNT URL");
  process.exit(2);
}
const account = privateKeyToAccount(key);
const scheme = new BatchSettlementEvmScheme(account);
const client = new x402Client().register(network, scheme).setSpendControls({ allowedAssets: [{ network, asset }] });
const fetchWithPayment = wrapFetchWithPayment(fetch, client);
try {
  const results = [];
  for (let i = 0; i < Number(count); i++) {
    const response = await fetchWithPayment(url);
    await response.text();
    const header = response.headers.get("PAYMENT-RESPONSE");
    results.push({ status: response.status, paymentResponse: header ? decodePaymentResponseHeader(header) : null });
  }
  const refund = await scheme.refund(url);
  console.log(JSON.stringify({ results, refund }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  process.exit(1);
}
